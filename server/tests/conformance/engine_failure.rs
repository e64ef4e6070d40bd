//! A watch engine whose notifier fails is loud: watchers are canceled with the
//! reason, the Watch stream ends instead of hanging, `Maintenance.Status` lists the
//! failure in `errors` and `/metrics` shows `argus_watch_engine_healthy 0`.

use argus_engine::watch::WatchHealth;

use crate::common::{connect, http_get, metric, poll, Argus, Collected, Spec};

#[test]
fn a_failed_notifier_is_reported_and_its_streams_end() {
    let argus = Argus::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().expect("address")));
    let metrics = argus.metrics_addr.expect("metrics").to_string();
    let healthy =
        || poll("the metrics page", || metric(&http_get(&metrics, "/metrics")?, "argus_watch_engine_healthy"));
    assert_eq!(healthy(), 1.0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut client = connect(argus.endpoint()).await;
        assert!(client.status().await.expect("status").errors().is_empty());
        let s = Collected::open(&client, &[Spec::prefix(1, "/a/"), Spec::key(2, "k")]).await;
        s.wait("created", |rs| rs.iter().filter(|r| r.created).count() == 2).await;
        argus.hub.inject_notifier_panic();
        s.wait("both watchers canceled with the reason", |rs| {
            rs.iter().filter(|r| r.canceled && r.cancel_reason.contains("injected notifier panic")).count() == 2
        })
        .await;
        // Reported while the server keeps answering (10 s, then it stops and `serve`
        // returns the failure, so the binary exits non-zero).
        let errors = client.status().await.expect("status").errors().to_vec();
        assert!(errors.iter().any(|e| e.contains("watch engine failed")), "{errors:?}");
        assert_eq!(tokio::task::block_in_place(healthy), 0.0);
        // The stream ends (it does not wait for a notifier that is gone).
        poll("the watch stream to end", || s.finished().then_some(()));
    });
    assert!(matches!(argus.hub.health(), WatchHealth::Failed(_)));
}
