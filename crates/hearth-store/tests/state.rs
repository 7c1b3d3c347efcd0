//! The SQLite state database: migrations, reopening, tokens (stored hashed),
//! apps, audit and usage, and refusing a database from a newer hearth.

use hearth_store::state::{token_hash, SCHEMA_VERSION, TOKEN_PREFIX};
use hearth_store::{AuditRow, Error, Home, NewApp, StateDb, Usage};

fn home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::Builder::new()
        .prefix("hearth-state-test-")
        .tempdir()
        .expect("tempdir");
    let home = Home::at(dir.path().join("home"));
    (dir, home)
}

#[track_caller]
fn must<T>(r: hearth_store::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("hearth-store error: {e}"),
    }
}

fn new_app(name: &str) -> NewApp {
    NewApp {
        name: name.to_string(),
        models: None,
        max_concurrent: None,
        tokens_per_minute: None,
        priority: 0,
        uid: None,
    }
}

fn row(id: &str, app: &str, tin: u64, tout: u64) -> AuditRow {
    AuditRow {
        request_id: id.to_string(),
        time: "2025-01-01T00:00:00Z".to_string(),
        app: app.to_string(),
        model: "smollm2".to_string(),
        endpoint: "/v1/chat/completions".to_string(),
        tokens_in: tin,
        tokens_out: tout,
        latency_ms: 12.5,
        status: 200,
        outcome: "ok".to_string(),
    }
}

#[test]
fn a_new_database_is_migrated_and_in_wal_mode() {
    let (_d, home) = home();
    let db = must(StateDb::open(&home));
    assert_eq!(db.path(), home.state_db_path());
    assert!(home.state_db_path().is_file());
    assert_eq!(must(db.schema_version()), SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION >= 1) };
    drop(db);
    let conn = rusqlite::Connection::open(home.state_db_path()).expect("open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn apps_and_tokens_survive_reopening() {
    let (_d, home) = home();
    let db = must(StateDb::open(&home));
    let (app, token) = must(db.add_app(&NewApp {
        name: "notes".into(),
        models: Some(vec!["smollm2".into(), "minilm".into()]),
        max_concurrent: Some(2),
        tokens_per_minute: Some(6000),
        priority: -3,
        uid: Some(1000),
    }));
    assert!(token.starts_with(TOKEN_PREFIX), "{token}");
    assert_eq!(token.len(), TOKEN_PREFIX.len() + 64);
    assert_eq!(app.name, "notes");
    assert_eq!(
        app.models.as_deref(),
        Some(&["smollm2".to_string(), "minilm".to_string()][..])
    );
    assert_eq!(app.max_concurrent, Some(2));
    assert_eq!(app.tokens_per_minute, Some(6000));
    assert_eq!(app.priority, -3);
    assert_eq!(app.uid, Some(1000));
    assert!(app.created.ends_with('Z'), "{}", app.created);
    assert!(app.may_use("minilm") && !app.may_use("gemma3"));
    drop(db);

    let db = must(StateDb::open(&home));
    assert_eq!(must(db.app("notes")), Some(app.clone()));
    assert_eq!(must(db.app_for_token(&token)), Some(app.clone()));
    assert_eq!(must(db.app_for_uid(1000)), Some(app.clone()));
    assert_eq!(must(db.app_for_uid(1001)), None);
    assert_eq!(must(db.app_for_token("hth_wrong")), None);
    // One character off is a different token.
    let mut off = token.clone();
    let last = off.pop().expect("non-empty");
    off.push(if last == '0' { '1' } else { '0' });
    assert_eq!(must(db.app_for_token(&off)), None);
    assert_eq!(must(db.apps()), [app]);
}

#[test]
fn the_plain_token_never_reaches_the_disk() {
    let (_d, home) = home();
    let db = must(StateDb::open(&home));
    let (_, token) = must(db.add_app(&new_app("a")));
    let mut bytes = std::fs::read(home.state_db_path()).expect("read db");
    let wal = home.root().join("state.sqlite3-wal");
    if let Ok(w) = std::fs::read(&wal) {
        bytes.extend(w);
    }
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    // The hash is there (so we are looking at the right bytes)...
    assert!(has(&token_hash(&token)), "the token's hash is stored");
    // ...the token, or its secret part, is not.
    assert!(!has(&token), "plain token found in the database files");
    assert!(!has(&token[TOKEN_PREFIX.len()..]), "token secret found");
}

#[test]
fn bad_apps_are_refused_clearly() {
    let db = must(StateDb::open_in_memory());
    must(db.add_app(&NewApp {
        uid: Some(7),
        ..new_app("one")
    }));
    let e = db.add_app(&new_app("one")).expect_err("duplicate");
    assert!(matches!(e, Error::AppExists { .. }), "{e:?}");
    assert!(e.to_string().contains("`one` already exists"), "{e}");

    let e = db
        .add_app(&NewApp {
            uid: Some(7),
            ..new_app("two")
        })
        .expect_err("uid taken");
    assert!(matches!(e, Error::UidTaken { uid: 7, .. }), "{e:?}");
    assert!(e.to_string().contains("`one`"), "{e}");

    for bad in ["", "a b", "../x", "-x"] {
        let e = db.add_app(&new_app(bad)).expect_err("invalid");
        assert!(matches!(e, Error::InvalidName { what: "app", .. }), "{e:?}");
    }
    let e = db
        .add_app(&NewApp {
            models: Some(vec!["ok".into(), "not ok".into()]),
            ..new_app("three")
        })
        .expect_err("bad model");
    assert!(e.to_string().contains("`not ok`"), "{e}");
    assert_eq!(must(db.apps()).len(), 1);
}

#[test]
fn removing_an_app_revokes_its_token_but_keeps_the_audit() {
    let db = must(StateDb::open_in_memory());
    let (_, token) = must(db.add_app(&new_app("gone")));
    must(db.record_request(&row("r1", "gone", 5, 7)));
    assert!(must(db.remove_app("gone")));
    assert!(!must(db.remove_app("gone")));
    assert_eq!(must(db.app("gone")), None);
    assert_eq!(must(db.app_for_token(&token)), None);
    assert_eq!(must(db.audit(Some("gone"), 10)).len(), 1);
    assert_eq!(must(db.usage("gone")), Usage::default());
    // The name is free again, with a new token.
    let (_, again) = must(db.add_app(&new_app("gone")));
    assert_ne!(again, token);
}

#[test]
fn audit_and_usage() {
    let db = must(StateDb::open_in_memory());
    must(db.add_app(&new_app("a")));
    must(db.add_app(&new_app("b")));
    must(db.record_request(&row("r1", "a", 10, 20)));
    must(db.record_request(&row("r2", "b", 1, 2)));
    let mut r3 = row("r3", "a", 30, 40);
    r3.status = 429;
    r3.outcome = "rejected".into();
    must(db.record_request(&r3));

    assert_eq!(
        must(db.usage("a")),
        Usage {
            requests: 2,
            tokens_in: 40,
            tokens_out: 60
        }
    );
    assert_eq!(
        must(db.usage("b")),
        Usage {
            requests: 1,
            tokens_in: 1,
            tokens_out: 2
        }
    );
    assert_eq!(must(db.usage("nobody")), Usage::default());

    let a = must(db.audit(Some("a"), 10));
    assert_eq!(a, [r3.clone(), row("r1", "a", 10, 20)], "newest first");
    let all = must(db.audit(None, 2));
    let ids: Vec<_> = all.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["r3", "r2"]);
    assert!(must(db.audit(None, 0)).is_empty());
}

#[test]
fn a_newer_database_is_refused() {
    let (_d, home) = home();
    drop(must(StateDb::open(&home)));
    let conn = rusqlite::Connection::open(home.state_db_path()).expect("open");
    conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 5))
        .expect("bump");
    drop(conn);
    let e = StateDb::open(&home).expect_err("too new");
    assert!(
        matches!(e, Error::StateTooNew { found, supported, .. }
            if found == SCHEMA_VERSION + 5 && supported == SCHEMA_VERSION),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("state.sqlite3"), "{msg}");
    assert!(msg.contains("newer than this hearth"), "{msg}");
}

#[test]
fn concurrent_first_opens_migrate_once() {
    // Many rounds on fresh homes: the race between first opens (creating the
    // file, switching it to WAL, migrating) shows only now and then.
    for round in 0..30 {
        let (_d, home) = home();
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..6)
                .map(|i| {
                    let home = home.clone();
                    s.spawn(move || {
                        let db = StateDb::open(&home)?;
                        db.add_app(&new_app(&format!("app{i}")))?;
                        db.schema_version()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        for r in results {
            assert_eq!(must(r), SCHEMA_VERSION, "round {round}");
        }
        assert_eq!(must(must(StateDb::open(&home)).apps()).len(), 6);
    }
}
