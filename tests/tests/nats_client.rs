//! A service's NATS connection with credentials and TLS, against a real nats-server that
//! requires them: anonymous and wrong credentials are refused, the right ones connect; a TLS
//! server is reached with the configured CA and refused without it.
//!
//! And the permissions `gcal-ops nats-auth` generates, as the server enforces them: every
//! identity against every subject of [`schemas::bus_access`]'s table, on the suite's own
//! operator-mode server.

use std::time::Duration;

use e2e::pki::TestPki;
use e2e::servers::NatsServer;
use service_kit::config::{Env, NatsUrl};
use service_kit::nats::{NatsClientSettings, connect};

const LIMIT: Duration = Duration::from_secs(2);

/// Reads the client settings as a service would, from exactly `pairs`.
fn settings(url: &str, pairs: &[(&str, &str)]) -> (NatsUrl, NatsClientSettings) {
    let url: NatsUrl = url.parse().expect("NATS URL");
    let mut env = Env::from_pairs(pairs.iter().copied());
    let settings = NatsClientSettings::from_env(&mut env, &url);
    env.finish().expect("valid settings");
    (url, settings)
}

/// Connects (within [`LIMIT`]) and proves the connection works with a request-free flush.
async fn reaches(url: &str, pairs: &[(&str, &str)]) -> Result<(), String> {
    let (url, settings) = settings(url, pairs);
    let ns = schemas::subjects::Namespace::default();
    let client = connect(&url, &settings, &ns, "nats-client-test", LIMIT)
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish("probe", "x".into())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn anonymous_and_wrong_credentials_are_refused_the_right_ones_connect() {
    service_kit::tls::install_crypto_provider();
    let server = NatsServer::start_with(&[
        "--user".into(),
        "metadata-worker".into(),
        "--pass".into(),
        "a-long-random-password".into(),
    ]);
    let url = server.url();
    let anonymous = reaches(&url, &[]).await;
    assert!(anonymous.is_err(), "anonymous connection accepted");
    let wrong = reaches(
        &url,
        &[
            ("NATS_USER", "metadata-worker"),
            ("NATS_PASSWORD", "not-the-password"),
        ],
    )
    .await;
    assert!(wrong.is_err(), "wrong password accepted");
    let error = wrong.unwrap_err();
    assert!(
        !error.contains("not-the-password"),
        "the password was echoed: {error}"
    );
    reaches(
        &url,
        &[
            ("NATS_USER", "metadata-worker"),
            ("NATS_PASSWORD", "a-long-random-password"),
        ],
    )
    .await
    .expect("the right credentials connect");
}

#[tokio::test]
async fn a_tls_server_is_reached_with_the_configured_ca_and_refused_without_it() {
    service_kit::tls::install_crypto_provider();
    let pki = TestPki::new();
    let ca = &pki.ca;
    let server = NatsServer::start_with(&[
        "--tls".into(),
        "--tlscert".into(),
        pki.server_cert.clone(),
        "--tlskey".into(),
        pki.server_key.clone(),
    ]);
    let url = server.url();
    reaches(&url, &[("NATS_TLS_CA_FILE", ca.as_str())])
        .await
        .expect("TLS with the configured CA connects");
    // Without the CA the server's certificate is not trusted (and plaintext is not offered).
    assert!(
        reaches(&url, &[]).await.is_err(),
        "untrusted server accepted"
    );
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    service_kit::tls::install_crypto_provider();
    let pki = TestPki::new();
    let ca = &pki.ca;
    let server = NatsServer::start_with(&[
        "--tlsverify".into(),
        "--tlscert".into(),
        pki.server_cert.clone(),
        "--tlskey".into(),
        pki.server_key.clone(),
        "--tlscacert".into(),
        ca.clone(),
    ]);
    let url = server.url();
    assert!(
        reaches(&url, &[("NATS_TLS_CA_FILE", ca.as_str())])
            .await
            .is_err(),
        "a client without a certificate accepted"
    );
    reaches(
        &url,
        &[
            ("NATS_TLS_CA_FILE", ca.as_str()),
            ("NATS_TLS_CERT_FILE", pki.client_cert.as_str()),
            ("NATS_TLS_KEY_FILE", pki.client_key.as_str()),
        ],
    )
    .await
    .expect("the client certificate connects");
}

#[test]
fn plaintext_or_anonymous_to_a_server_off_loopback_is_a_configuration_problem() {
    let url: NatsUrl = "nats://10.0.0.5:4222".parse().expect("url");
    let mut env = Env::from_pairs(Vec::<(String, String)>::new());
    NatsClientSettings::from_env(&mut env, &url);
    let error = env.finish().expect_err("refused").to_string();
    assert!(error.contains("NATS_URL"), "{error}");
    assert!(error.contains("NATS_ALLOW_PLAINTEXT"), "{error}");
    let creds = ("NATS_CREDS_FILE", "/run/secrets/api.creds");
    for allowed in [
        settings("tls://10.0.0.5:4222", &[creds]),
        settings(
            "nats://10.0.0.5:4222",
            &[creds, ("NATS_ALLOW_PLAINTEXT", "true")],
        ),
        settings("nats://localhost:4222", &[]),
        settings("nats://[::1]:4222", &[]),
    ] {
        drop(allowed);
    }
    // Off loopback a service says who it is, unless told the server wants no one.
    let mut env = Env::from_pairs(Vec::<(String, String)>::new());
    NatsClientSettings::from_env(&mut env, &"tls://10.0.0.5:4222".parse().expect("url"));
    let error = env
        .finish()
        .expect_err("anonymous off loopback")
        .to_string();
    assert!(error.contains("NATS_CREDS_FILE"), "{error}");
    assert!(error.contains("NATS_ALLOW_ANONYMOUS"), "{error}");
    drop(settings(
        "tls://10.0.0.5:4222",
        &[("NATS_ALLOW_ANONYMOUS", "true")],
    ));
    drop(settings(
        "tls://10.0.0.5:4222",
        &[("NATS_USER", "api"), ("NATS_PASSWORD", "x")],
    ));
    let mut env = Env::from_pairs([("NATS_USER", "alone")]);
    NatsClientSettings::from_env(&mut env, &"nats://127.0.0.1:4222".parse().expect("url"));
    assert!(env.finish().is_err(), "a user without a password");
}

mod permissions {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use e2e::TestContext;
    use schemas::bus_access::{
        Access, Durable, EventKind, Identity, Subject, client_name, decide, inbox_prefix,
    };
    use schemas::subjects::Namespace;

    const SUBACCOUNT: &str = "68cf05f060d294db17c0685e";

    /// One thing a client may try, and whether the table allows it.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Try {
        Publish(String),
        Subscribe(String),
    }

    impl Try {
        fn subject(&self) -> &str {
            match self {
                Self::Publish(s) | Self::Subscribe(s) => s,
            }
        }
    }

    /// What `identity` may do according to the decision table, spelled as concrete
    /// subjects: every subject family, every JetStream API call on both streams, every
    /// durable consumer and every other identity's reply inbox.
    fn expectations(identity: Identity, ns: &Namespace) -> Vec<(Try, bool)> {
        use Try::{Publish, Subscribe};
        let mut all = Vec::new();
        let js = "$JS.API";
        for subject in Subject::all() {
            let access = decide(identity, subject);
            match subject {
                Subject::ConnectRequested | Subject::AccessTokenRequested => {
                    let name = if subject == Subject::ConnectRequested {
                        ns.connect_requested()
                    } else {
                        ns.access_token_requested()
                    };
                    all.push((Publish(name.clone()), access == Access::Request));
                    all.push((Subscribe(name), access == Access::Serve));
                }
                Subject::Event(kind) => {
                    let name = format!(
                        "{}.events.{}.{SUBACCOUNT}",
                        ns.prefix(),
                        kind.subject_tokens()
                    );
                    let may = matches!(access, Access::Publish | Access::Replay);
                    all.push((Publish(name.clone()), may));
                    // Events are read through JetStream consumers only.
                    all.push((Subscribe(name), false));
                }
                Subject::DeadLetter(durable) => {
                    let name = ns.dead_letter(durable.name());
                    all.push((Publish(name.clone()), access == Access::Publish));
                    all.push((Subscribe(name), false));
                }
                Subject::EventsStream | Subject::DeadLetterStream => {
                    let stream = if subject == Subject::EventsStream {
                        ns.events_stream()
                    } else {
                        ns.dead_letter_stream()
                    };
                    let provision = access == Access::Provision;
                    let reads = matches!(access, Access::Read | Access::ReadAndPurge);
                    let purges = access == Access::ReadAndPurge;
                    all.push((
                        Publish(format!("{js}.STREAM.INFO.{stream}")),
                        access != Access::None,
                    ));
                    all.push((Publish(format!("{js}.STREAM.CREATE.{stream}")), provision));
                    all.push((Publish(format!("{js}.STREAM.UPDATE.{stream}")), provision));
                    all.push((Publish(format!("{js}.STREAM.PURGE.{stream}")), purges));
                    all.push((Publish(format!("{js}.STREAM.MSG.DELETE.{stream}")), purges));
                    all.push((Publish(format!("{js}.STREAM.DELETE.{stream}")), false));
                    // Consumers read stored messages back (a message that exhausted its
                    // deliveries): owners of a durable on the domain stream may.
                    let owns_one = Durable::ALL.iter().any(|d| d.owner() == identity);
                    let gets = reads || (subject == Subject::EventsStream && owns_one);
                    all.push((Publish(format!("{js}.STREAM.MSG.GET.{stream}")), gets));
                }
            }
        }
        let events = ns.events_stream();
        for durable in Durable::ALL {
            let name = durable.name();
            let owner = durable.owner() == identity;
            all.push((
                Publish(format!("{js}.CONSUMER.MSG.NEXT.{events}.{name}")),
                owner,
            ));
            all.push((
                Publish(format!("{js}.CONSUMER.CREATE.{events}.{name}")),
                owner,
            ));
            all.push((
                Publish(format!("{js}.CONSUMER.DELETE.{events}.{name}")),
                false,
            ));
            all.push((Publish(format!("$JS.ACK.{events}.{name}.1.1.1.1.0")), owner));
            all.push((
                Subscribe(format!(
                    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{events}.{name}"
                )),
                owner,
            ));
        }
        for other in Identity::ALL {
            let inbox = format!("{}.x", inbox_prefix(ns, client_name(other)));
            all.push((
                Subscribe(inbox),
                client_name(other) == client_name(identity),
            ));
        }
        // Nothing outside the namespace.
        all.push((Publish("elsewhere.events.x".into()), false));
        all.push((Subscribe(">".into()), false));
        all
    }

    /// Connects as `creds`, collecting the server's permission violations.
    async fn connect_recording(
        ctx: &TestContext,
        creds: &str,
    ) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let client = async_nats::ConnectOptions::with_credentials_file(creds)
            .await
            .expect("creds")
            .add_root_certificates(e2e::nats_auth::auth().ca.clone().into())
            .require_tls(true)
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        seen.lock().expect("errors").push(e.to_string());
                    }
                }
            })
            .connect(&ctx.nats_url)
            .await
            .expect("the identity connects");
        (client, errors)
    }

    /// Which of `tries` the server refused, by subject and kind.
    async fn refused(
        client: &async_nats::Client,
        errors: &Mutex<Vec<String>>,
        tries: &[Try],
    ) -> BTreeSet<Try> {
        let mut subscriptions = Vec::new();
        for attempt in tries {
            match attempt {
                Try::Publish(subject) => client
                    .publish(subject.clone(), "{}".into())
                    .await
                    .expect("publish is sent"),
                Try::Subscribe(subject) => subscriptions.push(
                    client
                        .subscribe(subject.clone())
                        .await
                        .expect("subscribe is sent"),
                ),
            }
        }
        client.flush().await.expect("flush");
        // Violations come back before the flush's PONG; give the callback a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let errors = errors.lock().expect("errors").clone();
        tries
            .iter()
            .filter(|t| {
                let (kind, subject) = match t {
                    Try::Publish(s) => ("publish", s),
                    Try::Subscribe(s) => ("subscription", s),
                };
                errors.iter().any(|e| {
                    let e = e.to_lowercase();
                    e.contains("permissions violation")
                        && e.contains(kind)
                        && e.contains(&format!("\"{}\"", subject.to_lowercase()))
                })
            })
            .cloned()
            .collect()
    }

    /// The table, enforced: for every identity, each subject it may not use is refused by
    /// the server and each one it may use is not.
    #[tokio::test]
    async fn every_identity_is_refused_exactly_what_the_table_forbids() {
        let ctx = TestContext::new();
        let ns = Namespace::new(&ctx.id).expect("ns");
        let mut failures = Vec::new();
        for identity in Identity::ALL {
            let expected = expectations(identity, &ns);
            let tries: Vec<Try> = expected.iter().map(|(t, _)| t.clone()).collect();
            let (client, errors) = connect_recording(&ctx, &ctx.creds(identity)).await;
            let refused = refused(&client, &errors, &tries).await;
            for (attempt, allowed) in &expected {
                let was_refused = refused.contains(attempt);
                if was_refused == *allowed {
                    failures.push(format!(
                        "{}: {attempt:?} was {} but the table says {}",
                        identity.name(),
                        if was_refused { "refused" } else { "allowed" },
                        if *allowed { "allowed" } else { "refused" }
                    ));
                }
            }
            assert!(
                expected.iter().any(|(t, allowed)| !allowed
                    && refused.contains(t)
                    && t.subject().starts_with("$JS.API.STREAM.DELETE")),
                "{}: stream deletion must be refused",
                identity.name()
            );
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The api asking for an access token gets no answer at all: the server drops the
    /// request, the oauth-worker never sees it.
    #[tokio::test]
    async fn the_api_cannot_ask_for_an_access_token() {
        let ctx = TestContext::new();
        let ns = Namespace::new(&ctx.id).expect("ns");
        // Something answering on the subject, as the oauth-worker would.
        let worker = ctx.nats_as(Identity::OAuthWorker).await;
        let mut requests = worker
            .subscribe(ns.access_token_requested())
            .await
            .expect("the oauth-worker may serve");
        worker.flush().await.expect("flush");
        let (api, errors) = connect_recording(&ctx, &ctx.creds(Identity::Api)).await;
        let asked = tokio::time::timeout(
            Duration::from_secs(2),
            api.request(ns.access_token_requested(), "{}".into()),
        )
        .await;
        assert!(
            !matches!(asked, Ok(Ok(_))),
            "the api got an answer: {asked:?}"
        );
        let got = tokio::time::timeout(
            Duration::from_millis(300),
            futures::StreamExt::next(&mut requests),
        )
        .await;
        assert!(got.is_err(), "the request reached the worker");
        assert!(
            errors
                .lock()
                .expect("errors")
                .iter()
                .any(|e| e.to_lowercase().contains("permissions violation")),
            "the server said why"
        );
        // The token client may.
        let client = ctx.nats_as(Identity::TokenClient).await;
        let reply = client.request(ns.access_token_requested(), "{}".into());
        let (served, answered) = tokio::join!(
            async {
                let request = futures::StreamExt::next(&mut requests)
                    .await
                    .expect("request");
                worker
                    .publish(request.reply.expect("reply subject"), "ok".into())
                    .await
                    .expect("reply");
            },
            reply
        );
        let () = served;
        assert_eq!(answered.expect("answered").payload.as_ref(), b"ok");
    }

    /// Operator mode refuses a client without credentials, and credentials signed by another
    /// account key.
    #[tokio::test]
    async fn anonymous_and_foreign_credentials_are_refused_by_the_suite_server() {
        let ctx = TestContext::new();
        let ca = e2e::nats_auth::auth().ca.clone();
        let anonymous = async_nats::ConnectOptions::new()
            .add_root_certificates(ca.clone().into())
            .require_tls(true)
            .connect(&ctx.nats_url);
        let anonymous = tokio::time::timeout(Duration::from_secs(5), anonymous).await;
        assert!(
            !matches!(anonymous, Ok(Ok(_))),
            "an anonymous client connected"
        );
        let stranger = ops::nats_auth::Authority::new();
        let (creds, _) = stranger
            .mint(
                Identity::Api,
                &Namespace::new(&ctx.id).expect("ns"),
                Default::default(),
            )
            .expect("mint");
        let path = ctx.creds_dir.join("stranger.creds");
        std::fs::write(&path, creds).expect("write");
        let foreign = async_nats::ConnectOptions::with_credentials_file(&path)
            .await
            .expect("creds")
            .add_root_certificates(ca.into())
            .require_tls(true)
            .connect(&ctx.nats_url)
            .await;
        assert!(
            foreign.is_err(),
            "credentials of another authority connected"
        );
        // Without TLS the server does not even talk.
        let plaintext = async_nats::ConnectOptions::with_credentials_file(ctx.creds(Identity::Api))
            .await
            .expect("creds")
            .connect(&ctx.nats_url)
            .await;
        assert!(plaintext.is_err(), "a client without the CA connected");
    }

    #[test]
    fn every_event_kind_is_in_the_table() {
        for kind in EventKind::ALL {
            assert!(Subject::all().contains(&Subject::Event(kind)));
        }
    }
}
