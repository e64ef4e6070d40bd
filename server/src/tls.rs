//! TLS on the client listener (etcd's `--cert-file`, `--key-file`,
//! `--trusted-ca-file`, `--client-cert-auth`), with rustls and its ring provider.
//!
//! gRPC and the HTTP/JSON gateway share the port, so they share its TLS: the server
//! offers ALPN `h2` and `http/1.1`, and hyper tells the two protocols apart after
//! the handshake as it does on a plain port.
//!
//! Each accepted socket is handshaken in a task of its own ([`incoming`]), with a
//! deadline ([`HANDSHAKE_TIMEOUT`]): a client that connects and sends nothing, or
//! sends too slowly, holds only its own task, never the accept loop. A handshake
//! that fails (no client certificate where one is required, one signed by another
//! CA, a plain-text client on the TLS port) closes the connection before any
//! request is read, with a warning in the log naming the peer and the reason.
//!
//! # The client's identity
//!
//! Every request (gRPC, and the gateway's, which pass the connection's extensions
//! on) carries a [`ConnInfo`] in its extensions: the peer's address and, on a TLS
//! connection whose client presented a certificate, its common name (etcd's "the
//! CN is the user" under `--client-cert-auth`). A service reads it with
//!
//! ```ignore
//! let cn: Option<&str> = req
//!     .extensions()
//!     .get::<argus_server::tls::ConnInfo>()
//!     .and_then(|c| c.identity.common_name.as_deref());
//! ```
//!
//! or [`peer_identity`] on the extensions. (Tonic's own `Request::remote_addr`
//! does not know this type: use [`ConnInfo::remote_addr`].)

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls;
use tonic::transport::server::Connected;

use crate::conn::{Conn, Connections};

/// How long a client may take to complete its TLS handshake before its
/// connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings of a listener, as etcd's flags name them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM (`--cert-file`).
    pub cert_file: PathBuf,
    /// The server's private key, PEM: PKCS#8, PKCS#1 or SEC1 (`--key-file`).
    pub key_file: PathBuf,
    /// The CA certificates client certificates must be signed by, PEM
    /// (`--trusted-ca-file`).
    pub trusted_ca_file: Option<PathBuf>,
    /// Require, and verify against `trusted_ca_file`, a client certificate on
    /// every connection (`--client-cert-auth`). Without it no client certificate is
    /// asked for (as etcd: a trusted CA alone does not ask for one).
    pub client_cert_auth: bool,
}

/// Who is at the other end of a connection, as its TLS handshake showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The common name of the client certificate's subject (the last CN, as Go's
    /// x509 reads it), if the client presented a certificate that was verified and
    /// has one. Always `None` on a plain-text connection.
    pub common_name: Option<String>,
}

/// What the server knows about the connection a request came on: in every
/// request's extensions (see the module documentation).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The server's address the client connected to.
    pub local_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's certificate identity (empty unless TLS with a client
    /// certificate).
    pub identity: PeerIdentity,
}

/// The identity of the connection a request came on, from its extensions
/// (`req.extensions()` of a `tonic::Request` or an `http::Request`).
pub fn peer_identity(extensions: &http::Extensions) -> Option<&PeerIdentity> {
    extensions.get::<ConnInfo>().map(|c| &c.identity)
}

fn read_file(what: &str, flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {flag} {}: {e}", path.display()))
}

/// The certificates of a PEM file (at least one).
pub(crate) fn load_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file("certificate file", flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it", path.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub(crate) fn load_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file("key file", flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{flag} {}: no PEM private key in it: {e}", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration of a listener with `files`.
///
/// # Errors
///
/// A sentence naming the flag and file at fault: a file missing or unreadable, no
/// certificate or key in it, a key that does not match the certificate, a CA file
/// without a usable CA, `--client-cert-auth` without `--trusted-ca-file`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = load_certs("--cert-file", &files.cert_file)?;
    let key = load_key("--key-file", &files.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if files.client_cert_auth {
        let Some(ca) = &files.trusted_ca_file else {
            return Err(
                "--client-cert-auth needs --trusted-ca-file (the CA that signs the client certificates)".to_string()
            );
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs("--trusted-ca-file", ca)? {
            roots
                .add(c)
                .map_err(|e| format!("--trusted-ca-file {}: not a usable CA certificate: {e}", ca.display()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("--trusted-ca-file {}: {e}", ca.display()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        if let Some(ca) = &files.trusted_ca_file {
            // Read anyway, so that a wrong path is reported at start, not later.
            load_certs("--trusted-ca-file", ca)?;
        }
        builder.with_no_client_auth()
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
        format!("--cert-file {} / --key-file {}: {e}", files.cert_file.display(), files.key_file.display())
    })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// An accepted connection: plain, or TLS after a completed handshake.
pub enum ServerIo {
    /// Plain text.
    Plain(Conn, ConnInfo),
    /// TLS (boxed: the session state is large).
    Tls(Box<tokio_rustls::server::TlsStream<Conn>>, ConnInfo),
}

impl ServerIo {
    fn info(&self) -> &ConnInfo {
        match self {
            ServerIo::Plain(_, i) | ServerIo::Tls(_, i) => i,
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(c, _) => Pin::new(c).poll_read(cx, buf),
            ServerIo::Tls(t, _) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(c, _) => Pin::new(c).poll_write(cx, buf),
            ServerIo::Tls(t, _) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(c, _) => Pin::new(c).poll_write_vectored(cx, bufs),
            ServerIo::Tls(t, _) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerIo::Plain(c, _) => c.is_write_vectored(),
            ServerIo::Tls(t, _) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(c, _) => Pin::new(c).poll_flush(cx),
            ServerIo::Tls(t, _) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(c, _) => Pin::new(c).poll_shutdown(cx),
            ServerIo::Tls(t, _) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for ServerIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info().clone()
    }
}

/// The connections a listener accepts, ready for the gRPC server: TCP_NODELAY set,
/// each wrapped by `conns` (so that the end of the shutdown grace can close it,
/// handshaking or not), and, with `tls`, handshaken first (see the module
/// documentation). The accept loop ends when the stream is dropped.
pub(crate) fn incoming(
    listener: tokio::net::TcpListener,
    conns: Arc<Connections>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> impl tokio_stream::Stream<Item = io::Result<ServerIo>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<ServerIo>>(64);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                // The server stopped accepting (it dropped the stream): close the
                // listener too, so that new clients are refused.
                () = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: not fatal, but do not
                    // spin on it.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without it a small response waits for the client's delayed ACK
            // whenever earlier bytes are unacknowledged (always, on a connection
            // carrying a watch stream); tonic does not set it on a caller's stream.
            if let Err(e) = socket.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
            let info = ConnInfo {
                remote_addr: Some(peer),
                local_addr: socket.local_addr().ok(),
                tls: acceptor.is_some(),
                identity: PeerIdentity::default(),
            };
            let conn = conns.wrap(socket);
            let Some(acceptor) = &acceptor else {
                if tx.send(Ok(ServerIo::Plain(conn, info))).await.is_err() {
                    return;
                }
                continue;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                    Ok(Ok(stream)) => {
                        let mut info = info;
                        info.identity.common_name = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| common_name(c.as_ref()));
                        let _ = tx.send(Ok(ServerIo::Tls(Box::new(stream), info))).await;
                    }
                    Ok(Err(e)) => {
                        // rustls's words for bytes that are not a TLS record.
                        let hint = if e.to_string().contains("InvalidContentType") {
                            " (not TLS: a plain-text client on the TLS port?)"
                        } else {
                            ""
                        };
                        tracing::warn!(peer = %peer, reason = %format_args!("{e}{hint}"),
                            "TLS handshake failed: connection refused");
                    }
                    Err(_) => {
                        tracing::warn!(peer = %peer, timeout = ?HANDSHAKE_TIMEOUT,
                            "TLS handshake not completed in time: connection closed");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

// ---------------------------------------------------------------------------------
// The subject common name of a certificate (DER), read by hand: a few tags of the
// X.509 structure, every length checked against what is left.
// ---------------------------------------------------------------------------------

/// One DER element at the start of `input`: (tag, contents, the rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags do not occur where we look
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// id-at-commonName, 2.5.4.3.
const CN_OID: &[u8] = &[0x55, 0x04, 0x03];

/// The common name of the subject of the certificate `der` (the last CN attribute,
/// as Go's x509 takes it), or `None` if it has none or cannot be read.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (SEQUENCE, cert, _) = der_element(der)? else { return None };
    let (SEQUENCE, tbs, _) = der_element(cert)? else { return None };
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] EXPLICIT version
    }
    // serialNumber, signature, issuer, validity: then the subject.
    for _ in 0..4 {
        rest = der_element(rest)?.2;
    }
    let (SEQUENCE, mut rdns, _) = der_element(rest)? else { return None };
    let mut found = None;
    while !rdns.is_empty() {
        let (SET, mut set, next) = der_element(rdns)? else { return None };
        rdns = next;
        while !set.is_empty() {
            let (SEQUENCE, atv, next) = der_element(set)? else { return None };
            set = next;
            let (OID, oid, value) = der_element(atv)? else { return None };
            if oid == CN_OID {
                let (tag, text, _) = der_element(value)?;
                found = Some(directory_string(tag, text)?);
            }
        }
    }
    found
}

/// The text of an X.520 DirectoryString.
fn directory_string(tag: u8, text: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String.
        0x0c | 0x13 | 0x16 => String::from_utf8(text.to_vec()).ok(),
        // TeletexString: read as Latin-1, as Go does.
        0x14 => Some(text.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UCS-2, big-endian.
        0x1e if text.len().is_multiple_of(2) => {
            let units: Vec<u16> = text.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn common_name_of_a_certificate() {
        let der = cert_with(&[
            (rcgen::DnType::OrganizationName, "org"),
            (rcgen::DnType::CommonName, "alice"),
            (rcgen::DnType::CountryName, "NL"),
        ]);
        assert_eq!(common_name(&der).as_deref(), Some("alice"));
        let der = cert_with(&[(rcgen::DnType::CommonName, "zoë ünïcode")]);
        assert_eq!(common_name(&der).as_deref(), Some("zoë ünïcode"));
    }

    #[test]
    fn no_common_name() {
        let der = cert_with(&[(rcgen::DnType::OrganizationName, "org")]);
        assert_eq!(common_name(&der), None);
    }

    #[test]
    fn garbage_and_truncation_give_none() {
        let der = cert_with(&[(rcgen::DnType::CommonName, "alice")]);
        for cut in 0..der.len() {
            // Every prefix is malformed: no panic, and no name from the outer
            // element's contents cut short.
            assert_eq!(common_name(&der[..cut]), None, "prefix of {cut} bytes");
        }
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(common_name(b""), None);
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn bad_configurations_are_refused_with_the_flag_named() {
        let dir = tempfile::tempdir().expect("dir");
        let k1 = rcgen::KeyPair::generate().expect("key");
        let k2 = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&k1)
            .expect("sign");
        let cert_file = write(dir.path(), "c.pem", &cert.pem());
        let key_file = write(dir.path(), "k.pem", &k1.serialize_pem());
        let other_key = write(dir.path(), "k2.pem", &k2.serialize_pem());
        let ok = TlsFiles { cert_file: cert_file.clone(), key_file: key_file.clone(), ..TlsFiles::default() };
        assert!(server_config(&ok).is_ok());

        let err = |f: TlsFiles| server_config(&f).expect_err("refused");
        let e = err(TlsFiles { cert_file: dir.path().join("missing.pem"), ..ok.clone() });
        assert!(e.contains("--cert-file") && e.contains("missing.pem"), "{e}");
        let e = err(TlsFiles { key_file: cert_file.clone(), ..ok.clone() });
        assert!(e.contains("--key-file"), "{e}");
        let e = err(TlsFiles { key_file: other_key, ..ok.clone() });
        assert!(e.contains("--cert-file") && e.to_lowercase().contains("key"), "mismatched key: {e}");
        let e = err(TlsFiles { client_cert_auth: true, ..ok.clone() });
        assert!(e.contains("--client-cert-auth needs --trusted-ca-file"), "{e}");
        let e = err(TlsFiles { trusted_ca_file: Some(key_file), client_cert_auth: true, ..ok.clone() });
        assert!(e.contains("--trusted-ca-file"), "{e}");
        let e = err(TlsFiles { trusted_ca_file: Some(dir.path().join("nope")), ..ok });
        assert!(e.contains("--trusted-ca-file"), "{e}");
    }

    /// A CA, a server certificate for 127.0.0.1 and a client certificate with
    /// `client_cn` from that CA: (server config with client-cert-auth, client
    /// config).
    fn pki(client_cn: &str) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let dir = tempfile::tempdir().expect("dir");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().expect("key")).expect("ca");
        let server_key = rcgen::KeyPair::generate().expect("key");
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&server_key, &ca)
            .expect("sign");
        let mut client = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        client.distinguished_name.push(rcgen::DnType::CommonName, client_cn);
        let client_key = rcgen::KeyPair::generate().expect("key");
        let client = client.signed_by(&client_key, &ca).expect("sign");
        let files = TlsFiles {
            cert_file: write(dir.path(), "s.pem", &server.pem()),
            key_file: write(dir.path(), "sk.pem", &server_key.serialize_pem()),
            trusted_ca_file: Some(write(dir.path(), "ca.pem", &ca.pem())),
            client_cert_auth: true,
        };
        let server_cfg = server_config(&files).expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("root");
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![client.der().clone()],
                PrivateKeyDer::try_from(client_key.serialize_der()).expect("key der"),
            )
            .expect("client config");
        (server_cfg, Arc::new(client_cfg))
    }

    /// A silent client and a client from another CA do not hold up or reach the
    /// server; the next good client's connection carries its CN.
    #[tokio::test]
    async fn handshakes_run_apart_and_the_cn_reaches_the_connection() {
        use tokio_stream::StreamExt;
        let (server_cfg, alice) = pki("alice");
        let (_, stranger) = pki("mallory");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = Box::pin(incoming(listener, Connections::new(), Some(server_cfg)));
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let _silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let refused = tokio_rustls::TlsConnector::from(stranger)
            .connect(name.clone(), tokio::net::TcpStream::connect(addr).await.expect("connect"));
        // TLS 1.3: the client finishes before the server checks its certificate;
        // the refusal shows on its first read.
        if let Ok(mut s) = refused.await {
            let mut b = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(30), tokio::io::AsyncReadExt::read(&mut s, &mut b));
            let read = read.await.expect("the server neither refused nor served the stranger");
            assert!(read.map_or(true, |n| n == 0), "the stranger was served");
        }
        let client = tokio_rustls::TlsConnector::from(alice)
            .connect(name, tokio::net::TcpStream::connect(addr).await.expect("connect"));
        let (client, served) = tokio::join!(client, incoming.next());
        let client = client.expect("alice's handshake");
        let served = served.expect("a connection").expect("accepted");
        let info = served.connect_info();
        assert!(matches!(served, ServerIo::Tls(..)) && info.tls);
        assert_eq!(info.identity.common_name.as_deref(), Some("alice"));
        assert_eq!(info.remote_addr, client.get_ref().0.local_addr().ok());
        assert_eq!(info.local_addr, Some(addr));
    }
}
