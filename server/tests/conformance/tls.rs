//! TLS side by side with real etcd 3.4: the same certificates (made here with
//! rcgen: a CA, a server certificate for 127.0.0.1 and localhost, a client
//! certificate with CN "alice" from that CA and one from another CA) given to etcd
//! (`--cert-file --key-file --trusted-ca-file --client-cert-auth`) and to the
//! `argus` binary with the same flags.
//!
//! * `etcdctl --cacert --cert --key`: put, get and watch print the same on both;
//! * refused on both: etcdctl without a client certificate, with the other CA's
//!   certificate, and over plain text; curl over plain http (etcd answers Go's
//!   "400 Bad Request: client sent an HTTP request to an HTTPS server"; Argus closes
//!   the connection: both fail, the outputs are printed, not compared);
//! * Argus logs each refusal (peer address and reason) and keeps serving, also
//!   while a client holds a connection without ever starting its handshake;
//! * curl over https to the gateway, HTTP/1.1 and h2: equal bodies after the
//!   header ids are blanked;
//! * a mirror of a TLS etcd with client-cert-auth (`--upstream https://..
//!   --upstream-cacert --upstream-cert --upstream-key`), itself serving TLS: a put
//!   through etcd reaches a watch on the mirror;
//! * a bad configuration (of the listener, or of a mirror's upstream) stops the
//!   binary at start with the flag named.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::Value;

use crate::common::{filter_stderr, ArgusProcess, ChildGuard, Etcd, PATIENCE};

/// The certificate files of a test, in a temporary directory.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    alice_cert: PathBuf,
    alice_key: PathBuf,
    /// CN "alice" too, signed by another CA.
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
    dir: tempfile::TempDir,
}

fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("ca key")).expect("self-sign the ca")
}

/// A leaf certificate signed by `issuer`: (certificate PEM, key PEM).
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> (String, String) {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = usages;
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write a pem file");
            p
        };
        let ca1 = ca("argus-test-ca");
        let ca2 = ca("another-ca");
        // The server certificate serves as a client certificate too: etcd 3.4's
        // gateway connects to its own gRPC port with it.
        let (sc, sk) = leaf(
            &ca1,
            "argus-test-server",
            &["127.0.0.1", "localhost"],
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        );
        let (ac, ak) = leaf(&ca1, "alice", &[], vec![ExtendedKeyUsagePurpose::ClientAuth]);
        let (xc, xk) = leaf(&ca2, "alice", &[], vec![ExtendedKeyUsagePurpose::ClientAuth]);
        Pki {
            ca: write("ca.pem", &ca1.pem()),
            server_cert: write("server.pem", &sc),
            server_key: write("server-key.pem", &sk),
            alice_cert: write("alice.pem", &ac),
            alice_key: write("alice-key.pem", &ak),
            stranger_cert: write("stranger.pem", &xc),
            stranger_key: write("stranger-key.pem", &xk),
            dir,
        }
    }

    /// The server flags, etcd's and Argus's alike.
    fn server_flags(&self) -> Vec<String> {
        vec![
            "--cert-file".into(),
            s(&self.server_cert),
            "--key-file".into(),
            s(&self.server_key),
            "--trusted-ca-file".into(),
            s(&self.ca),
            "--client-cert-auth".into(),
        ]
    }
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// etcd 3.4 serving its client URL over TLS with the test's certificates.
fn tls_etcd(pki: &Pki) -> Etcd {
    Etcd::start_with("https", &pki.server_flags(), |endpoint| {
        let health = curl(pki, endpoint, &["--http1.1", &format!("https://{endpoint}/health")]);
        health.stdout.contains("\"health\":\"true\"")
    })
}

/// What a client printed.
#[derive(Debug)]
struct Out {
    stdout: String,
    stderr: String,
    ok: bool,
}

fn run(cmd: &mut Command) -> Out {
    let out = cmd.stdin(Stdio::null()).output().expect("run a client");
    Out {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: filter_stderr(&String::from_utf8_lossy(&out.stderr)),
        ok: out.status.success(),
    }
}

/// Which credentials etcdctl or curl present.
#[derive(Clone, Copy, Debug)]
enum Creds {
    /// alice's certificate, from the trusted CA.
    Alice,
    /// The CA only: no client certificate.
    NoCert,
    /// A certificate from another CA.
    Stranger,
}

fn cred_args(pki: &Pki, creds: Creds) -> Vec<String> {
    let mut a = vec!["--cacert".to_string(), s(&pki.ca)];
    match creds {
        Creds::Alice => a.extend(["--cert".into(), s(&pki.alice_cert), "--key".into(), s(&pki.alice_key)]),
        Creds::NoCert => {}
        Creds::Stranger => a.extend(["--cert".into(), s(&pki.stranger_cert), "--key".into(), s(&pki.stranger_key)]),
    }
    a
}

/// `etcdctl` over https with `creds`; a refused connection fails within the
/// command timeout.
fn etcdctl(pki: &Pki, endpoint: &str, creds: Creds, args: &[&str]) -> Out {
    let timeout = if matches!(creds, Creds::Alice) { "20s" } else { "5s" };
    run(Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{endpoint}"))
        .arg(format!("--command-timeout={timeout}"))
        .arg("--dial-timeout=5s")
        .args(cred_args(pki, creds))
        .args(args))
}

/// `curl -sS` with alice's certificate and `args`.
fn curl(pki: &Pki, _endpoint: &str, args: &[&str]) -> Out {
    run(Command::new("curl").args(["-sS", "--max-time", "20"]).args(cred_args(pki, Creds::Alice)).args(args))
}

/// Runs `etcdctl watch` with alice's certificate until it has printed `lines`
/// lines (or PATIENCE passed); its output.
fn watch_lines(pki: &Pki, endpoint: &str, args: &[&str], lines: usize) -> String {
    let mut child = ChildGuard(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{endpoint}"))
            .args(cred_args(pki, Creds::Alice))
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl watch"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < lines {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(l),
            Err(_) => break,
        }
    }
    child.kill();
    got.join("\n")
}

/// A gateway reply with the header's identities blanked.
fn normalize_json(body: &str) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    if let Some(h) = v.get_mut("header").and_then(Value::as_object_mut) {
        for k in ["cluster_id", "member_id", "raft_term"] {
            if h.contains_key(k) {
                h.insert(k.to_string(), Value::String(format!("<{k}>")));
            }
        }
    }
    v.to_string()
}

fn start_argus(pki: &Pki, data: &Path) -> ArgusProcess {
    let flags = pki.server_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    ArgusProcess::start_logging(data, &flags, "warn")
}

fn argus_log(a: &ArgusProcess) -> String {
    a.stderr.lock().unwrap().join("\n")
}

#[test]
fn tls_with_client_certificates_matches_etcd() {
    let pki = Pki::new();
    let etcd = std::thread::scope(|sc| {
        let h = sc.spawn(|| tls_etcd(&pki));
        h.join().expect("etcd start")
    });
    let argus = start_argus(&pki, &pki.dir.path().join("argus-data"));
    let endpoints = [("etcd", etcd.endpoint.clone()), ("argus", argus.endpoint())];

    // A client that connects and never starts its handshake must not hold up the
    // others (the handshake has its own task and deadline).
    let stuck = TcpStream::connect(argus.addr).expect("connect");

    // Allowed: put, get, watch from the first revision; printed the same.
    let mut seen = Vec::new();
    for (name, ep) in &endpoints {
        let put1 = etcdctl(&pki, ep, Creds::Alice, &["put", "/tls/a", "1"]);
        let put2 = etcdctl(&pki, ep, Creds::Alice, &["put", "/tls/b", "2"]);
        let get = etcdctl(&pki, ep, Creds::Alice, &["get", "--prefix", "/tls/", "-w", "fields"]);
        assert!(put1.ok && put2.ok && get.ok, "{name}: {put1:?} {put2:?} {get:?}");
        let get_fields: String = get
            .stdout
            .lines()
            .filter(|l| {
                !l.starts_with("\"ClusterID\"") && !l.starts_with("\"MemberID\"") && !l.starts_with("\"RaftTerm\"")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let watched = watch_lines(&pki, ep, &["--prefix", "/tls/", "--rev=1"], 6);
        seen.push((put1.stdout + &put2.stdout, get_fields, watched));
    }
    assert!(seen[0].1.contains("\"Key\" : \"/tls/b\""), "etcd's get: {}", seen[0].1);
    assert_eq!(seen[0].2, "PUT\n/tls/a\n1\nPUT\n/tls/b\n2", "etcd's watch");
    assert_eq!(seen[0], seen[1], "etcdctl over TLS: etcd's output, then Argus's");

    // Refused on both, in the handshake.
    for (creds, what) in [(Creds::NoCert, "no client certificate"), (Creds::Stranger, "a certificate from another CA")]
    {
        let outs: Vec<Out> = endpoints.iter().map(|(_, ep)| etcdctl(&pki, ep, creds, &["get", "/tls/a"])).collect();
        println!("etcdctl with {what}:\n  etcd : {:?}\n  argus: {:?}", outs[0].stderr.trim(), outs[1].stderr.trim());
        for (o, (name, _)) in outs.iter().zip(&endpoints) {
            assert!(!o.ok && !o.stdout.contains("/tls/a"), "{name} served a client with {what}: {o:?}");
        }
    }
    // Plain text on the TLS port: etcdctl, and curl.
    for (name, ep) in &endpoints {
        let o = run(Command::new("etcdctl").env("ETCDCTL_API", "3").args([
            &format!("--endpoints=http://{ep}"),
            "--command-timeout=5s",
            "--dial-timeout=5s",
            "get",
            "/tls/a",
        ]));
        println!("etcdctl over plain text to {name}: {:?}", o.stderr.trim());
        assert!(!o.ok && !o.stdout.contains("/tls/a"), "{name} served plain-text etcdctl: {o:?}");
        let o = run(Command::new("curl").args([
            "-sS",
            "-f",
            "--max-time",
            "20",
            &format!("http://{ep}/v3/kv/range"),
            "-d",
            r#"{"key":"L3Rscy9h"}"#,
        ]));
        println!("curl over plain http to {name}: {:?} {:?}", o.stdout.trim(), o.stderr.trim());
        assert!(!o.ok && !o.stdout.contains("L3Rscy9h"), "{name} served plain http: {o:?}");
    }

    // The gateway over https, HTTP/1.1 and h2 (ALPN): the same bodies.
    let body = r#"{"key":"L3Rscy8=","range_end":"L3RsczA="}"#;
    for version in ["--http1.1", "--http2"] {
        let replies: Vec<String> = endpoints
            .iter()
            .map(|(name, ep)| {
                let o = curl(&pki, ep, &[version, &format!("https://{ep}/v3/kv/range"), "-d", body]);
                assert!(o.ok, "{name}: curl {version}: {o:?}");
                normalize_json(&o.stdout)
            })
            .collect();
        assert!(replies[0].contains("\"count\":\"2\""), "etcd's range: {}", replies[0]);
        assert_eq!(replies[0], replies[1], "curl {version} /v3/kv/range: etcd's reply, then Argus's");
    }

    // Argus said why it refused each, and whom.
    let log = argus_log(&argus);
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("TLS handshake failed")).collect();
    assert!(refusals.len() >= 4, "Argus logged {} refused handshakes; its log:\n{log}", refusals.len());
    assert!(refusals.iter().all(|l| l.contains("peer=127.0.0.1:") && l.contains("reason=")), "{refusals:#?}");
    assert!(
        refusals.iter().any(|l| l.to_lowercase().contains("certificate")),
        "no refusal names the certificate: {refusals:#?}"
    );
    println!("Argus's refusals:\n{}", refusals.join("\n"));
    // And still serves, the stuck client still connected.
    let get = etcdctl(&pki, &endpoints[1].1, Creds::Alice, &["get", "/tls/a", "--print-value-only"]);
    assert_eq!(get.stdout, "1\n", "{get:?}");
    drop(stuck);
}

#[test]
fn a_bad_tls_configuration_stops_the_binary_at_start() {
    let pki = Pki::new();
    let data = pki.dir.path().join("data");
    let missing = pki.dir.path().join("missing.pem");
    let mirror = |extra: &[&str]| {
        let mut a: Vec<String> = vec!["mirror".into(), "--upstream".into(), "https://127.0.0.1:1".into()];
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (mirror(&[]), "an https:// upstream needs --upstream-cacert"),
        (mirror(&["--upstream-cacert", &s(&missing)]), "--upstream-cacert"),
        (
            mirror(&[
                "--upstream-cacert",
                &s(&pki.ca),
                "--upstream-cert",
                &s(&pki.alice_cert),
                "--upstream-key",
                &s(&pki.server_key),
            ]),
            "upstream https://127.0.0.1:1: TLS",
        ),
        (vec!["--cert-file".into(), s(&missing), "--key-file".into(), s(&pki.server_key)], "--cert-file"),
        (vec!["--cert-file".into(), s(&pki.server_cert), "--key-file".into(), s(&pki.alice_key)], "--key-file"),
        (vec!["--cert-file".into(), s(&pki.server_cert), "--key-file".into(), s(&pki.server_cert)], "--key-file"),
        (
            vec![
                "--cert-file".into(),
                s(&pki.server_cert),
                "--key-file".into(),
                s(&pki.server_key),
                "--client-cert-auth".into(),
            ],
            "--client-cert-auth needs --trusted-ca-file",
        ),
        (vec!["--cert-file".into(), s(&pki.server_cert)], "--key-file"),
    ];
    for (args, expect) in cases {
        let mut child = ChildGuard(
            Command::new(env!("CARGO_BIN_EXE_argus"))
                .arg(if args[0] == "mirror" { "mirror" } else { "serve" })
                .args(["--listen", "127.0.0.1:0", "--data-dir"])
                .arg(&data)
                .args(args.iter().skip_while(|a| *a == "mirror"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn argus"),
        );
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(st) = child.0.try_wait().expect("wait") {
                break st;
            }
            assert!(Instant::now() < deadline, "argus {args:?} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().expect("stderr"), &mut err).expect("stderr");
        assert!(!status.success(), "argus {args:?} started: {err}");
        assert!(err.contains(expect), "argus {args:?}: the error does not say {expect:?}:\n{err}");
        assert!(!err.contains("serving etcd v3 API"), "{err}");
    }
}

#[test]
fn mirror_of_a_tls_cluster_with_client_cert_auth() {
    let pki = Pki::new();
    let etcd = tls_etcd(&pki);
    let upstream = format!("https://{}", etcd.endpoint);
    let mut flags = vec![
        "--upstream".to_string(),
        upstream,
        "--upstream-cacert".into(),
        s(&pki.ca),
        "--upstream-cert".into(),
        s(&pki.alice_cert),
        "--upstream-key".into(),
        s(&pki.alice_key),
    ];
    // The mirror's own listener over TLS too.
    flags.extend(pki.server_flags());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mirror = ArgusProcess::start_subcommand("mirror", &pki.dir.path().join("mirror-data"), &flags, "warn");
    let ep = mirror.endpoint();

    let put = etcdctl(&pki, &etcd.endpoint, Creds::Alice, &["put", "/m/before", "0"]);
    assert!(put.ok, "{put:?}");
    // Written through etcd after the watch is open: seen on the mirror.
    let (tx, rx) = mpsc::channel();
    let (pki_ref, ep_ref) = (&pki, ep.as_str());
    std::thread::scope(|sc| {
        sc.spawn(move || {
            let _ = tx.send(watch_lines(pki_ref, ep_ref, &["--prefix", "/m/", "--rev=1"], 6));
        });
        let deadline = Instant::now() + PATIENCE;
        // Keep writing until the watch has seen the write (the watcher may start
        // after the first put; --rev=1 replays it in any case).
        let put = etcdctl(&pki, &etcd.endpoint, Creds::Alice, &["put", "/m/after", "1"]);
        assert!(put.ok, "{put:?}");
        let watched = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()) + PATIENCE).expect("watch");
        assert_eq!(
            watched,
            "PUT\n/m/before\n0\nPUT\n/m/after\n1",
            "the mirror's watch; its log:\n{}",
            argus_log(&mirror)
        );
    });
    // A read through the mirror, and a write forwarded through it.
    let put = etcdctl(&pki, &ep, Creds::Alice, &["put", "/m/via-mirror", "2"]);
    assert!(put.ok, "{put:?}");
    let get = etcdctl(&pki, &etcd.endpoint, Creds::Alice, &["get", "/m/via-mirror", "--print-value-only"]);
    assert_eq!(get.stdout, "2\n", "{get:?}");
    // Without a client certificate the mirror refuses as etcd does.
    let refused = etcdctl(&pki, &ep, Creds::NoCert, &["get", "/m/before"]);
    assert!(!refused.ok, "{refused:?}");
    let _ = std::io::stdout().flush();
}

/// Under `--client-cert-auth`, a request without a token is the user its client
/// certificate's common name names (etcd's behaviour), side by side with etcd.
#[test]
fn the_certificate_common_name_is_the_user_under_client_cert_auth() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("temp dir");
    let etcd = tls_etcd(&pki);
    let argus = start_argus(&pki, data.path());
    let script: &[&[&str]] = &[
        &["user", "add", "root", "--new-user-password=rootpw"],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "/pub/", "--prefix"],
        &["user", "add", "alice", "--new-user-password=alicepw"],
        &["user", "grant-role", "alice", "reader"],
        &["auth", "enable"],
        &["--user", "root:rootpw", "put", "/pub/x", "1"],
        &["--user", "root:rootpw", "put", "/secret", "s"],
        // No token: the certificate's CN, alice.
        &["get", "/pub/x"],
        &["get", "/secret"],
        &["put", "/pub/x", "2"],
        &["user", "list"],
        // A token wins over the certificate.
        &["--user", "root:rootpw", "get", "/secret"],
    ];
    let transcript = |endpoint: &str| {
        let mut t = String::new();
        for args in script {
            let o = etcdctl(&pki, endpoint, Creds::Alice, args);
            t.push_str(&format!("$ {}\n{}{}ok={}\n", args.join(" "), o.stdout, o.stderr, o.ok));
        }
        t
    };
    let e = transcript(&etcd.endpoint);
    let a = transcript(&argus.endpoint());
    crate::etcdctl::assert_same("client certificate CN as the user", &e, &a);
    assert!(a.contains("$ get /pub/x\n/pub/x\n1\n"), "{a}");
    assert!(a.contains("etcdserver: permission denied"), "{a}");
}
