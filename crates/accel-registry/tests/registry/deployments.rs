//! Deployment records (migration 6): the record's life, one local
//! deployment per device, what a deployment needs.

use super::images::{build, local, register};
use super::*;
use accel_registry::{DeploymentRecord, DeploymentUpdate, NewDeployment};
use serde_json::json;

/// `m:1` and `m2:1`, with succeeded images `img:1` (of `m`) and `img:2`,
/// `img2:1` (of `m2`).
fn scene(home: &Path, reg: &Registry) {
    register(home, reg, "m", b"model one");
    register(home, reg, "m2", b"model two");
    build(reg, "img", "m", &[b"runtime"]);
    build(reg, "img", "m2", &[b"runtime"]);
    build(reg, "img2", "m2", &[b"runtime"]);
}

#[test]
fn deployment_lifecycle() {
    let (home, reg) = setup();
    scene(home.path(), &reg);
    let created = reg
        .create_deployment(&local("svc", "img:1", Some("cuda:0")))
        .unwrap();
    assert_eq!(created.name, "svc");
    assert_eq!(created.target, "local");
    assert_eq!(created.image, "img:1");
    assert_eq!(created.state, "starting");
    assert_eq!(created.device.as_deref(), Some("cuda:0"));
    assert_eq!(created.port, Some(8080));
    assert_eq!((created.pid, &created.scoring_uri), (None, &None));
    assert_eq!(created.config, json!({"auth": true}));
    assert!(created.created.ends_with('Z') && created.created == created.updated);
    assert_eq!(reg.get_deployment("svc").unwrap(), created);

    let running = reg
        .update_deployment(
            "svc",
            &DeploymentUpdate {
                state: Some("running".into()),
                pid: Some(Some(4242)),
                port: Some(Some(18080)),
                scoring_uri: Some(Some("http://127.0.0.1:18080/v1/score".into())),
                ..DeploymentUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(running.state, "running");
    assert_eq!(running.pid, Some(4242));
    assert_eq!(running.port, Some(18080));
    assert_eq!(
        running.scoring_uri.as_deref(),
        Some("http://127.0.0.1:18080/v1/score")
    );
    assert_eq!(
        (&running.image, &running.config),
        (&created.image, &created.config)
    );
    assert!(running.updated >= created.updated);
    assert_eq!(running.created, created.created);

    // Replace the model on the device: another image, other settings;
    // clearing the pid.
    let replaced = reg
        .update_deployment(
            "svc",
            &DeploymentUpdate {
                image: Some(r("img")),
                config: Some(json!({"auth": false, "replicas": 1})),
                pid: Some(None),
                ..DeploymentUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(replaced.image, "img:2");
    assert_eq!(replaced.pid, None);
    assert_eq!(replaced.state, "running");
    assert_eq!(replaced.config, json!({"auth": false, "replicas": 1}));
    assert_eq!(replaced.device.as_deref(), Some("cuda:0"));
    // Nothing changes with an empty update but the time.
    let same = reg
        .update_deployment("svc", &DeploymentUpdate::default())
        .unwrap();
    assert_eq!(
        DeploymentRecord {
            updated: replaced.updated.clone(),
            ..same.clone()
        },
        replaced
    );

    let k8s = reg
        .create_deployment(&NewDeployment {
            target: "kubernetes".into(),
            device: None,
            ..local("a-k8s", "img2", None)
        })
        .unwrap();
    assert_eq!(reg.list_deployments().unwrap(), vec![k8s, same.clone()]);
    let value = serde_json::to_value(&same).unwrap();
    assert_eq!(value["image"], "img:2");
    assert_eq!(
        serde_json::from_value::<DeploymentRecord>(value).unwrap(),
        same
    );

    // Deleting a record frees its image for deletion.
    let err = reg.delete_image(&r("img:2"), false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    reg.delete_deployment("svc").unwrap();
    let err = reg.get_deployment("svc").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.to_string(), "no deployment named \"svc\"");
    let err = reg.delete_deployment("svc").unwrap_err();
    assert_eq!(err.to_string(), "no deployment named \"svc\"");
    assert_eq!(
        reg.delete_image(&r("img:2"), false).unwrap(),
        ["image img:2"]
    );
    // Reopening changes nothing.
    let left = reg.list_deployments().unwrap();
    drop(reg);
    let reg = Registry::open(home.path()).unwrap();
    assert_eq!(reg.list_deployments().unwrap(), left);
}

#[test]
fn one_local_deployment_per_device() {
    let (home, reg) = setup();
    scene(home.path(), &reg);
    let first = reg
        .create_deployment(&local("first", "img:1", Some("cuda:0")))
        .unwrap();
    assert_eq!(reg.deployment_on_device("cuda:0").unwrap(), Some(first));
    assert_eq!(reg.deployment_on_device("cuda:1").unwrap(), None);

    let err = reg
        .create_deployment(&local("second", "img2", Some("cuda:0")))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(
        err.to_string(),
        "device \"cuda:0\" is used by deployment \"first\" (model \"m:1\")"
    );
    assert!(reg.get_deployment("second").is_err());
    // Another device, no device, or a Kubernetes deployment are fine.
    reg.create_deployment(&local("second", "img2", Some("cuda:1")))
        .unwrap();
    reg.create_deployment(&local("cpu-a", "img2", None))
        .unwrap();
    reg.create_deployment(&local("cpu-b", "img2", None))
        .unwrap();
    reg.create_deployment(&NewDeployment {
        target: "kubernetes".into(),
        ..local("cluster", "img2", Some("cuda:0"))
    })
    .unwrap();
    assert_eq!(
        reg.deployment_on_device("cuda:0").unwrap().unwrap().name,
        "first"
    );

    // The schema enforces it too, whatever the writer.
    let conn = rusqlite::Connection::open(home.path().join("registry.db")).unwrap();
    let err = conn
        .execute(
            "INSERT INTO deployments (name, target, image_id, state, device, config, created, updated)
             SELECT 'sneaky', 'local', image_id, 'running', 'cuda:0', '{}', created, updated
             FROM deployments WHERE name = 'first'",
            [],
        )
        .unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation),
        "{err}"
    );

    // Freed when its record goes.
    reg.delete_deployment("first").unwrap();
    assert_eq!(reg.deployment_on_device("cuda:0").unwrap(), None);
    let third = reg
        .create_deployment(&local("third", "img2", Some("cuda:0")))
        .unwrap();
    assert_eq!(reg.deployment_on_device("cuda:0").unwrap(), Some(third));
}

#[test]
fn deployments_need_a_free_name_a_succeeded_image_and_valid_fields() {
    let (home, reg) = setup();
    scene(home.path(), &reg);
    reg.create_deployment(&local("svc", "img", None)).unwrap();
    let err = reg
        .create_deployment(&local("svc", "img2", None))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(err.to_string(), "deployment \"svc\" already exists");
    let err = reg
        .create_deployment(&local("other", "nope", None))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.to_string(), "no image named \"nope\"");
    let err = reg
        .create_deployment(&local("other", "img:7", None))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "image \"img\" has no version 7 (latest is 2)"
    );

    let invalid = [
        local("../x", "img", None),
        NewDeployment {
            target: "cloud".into(),
            ..local("other", "img", None)
        },
        local("other", "img", Some("cuda 0")),
        local("other", "img", Some("")),
        NewDeployment {
            config: json!({ "x": "a".repeat(1 << 20) }),
            ..local("other", "img", None)
        },
    ];
    for new in invalid {
        let err = reg.create_deployment(&new).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{new:?}: {err}");
    }
    let err = reg
        .create_deployment(&NewDeployment {
            target: "cloud".into(),
            ..local("other", "img", None)
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown deployment target \"cloud\" (known: local, kubernetes)"
    );

    for update in [
        DeploymentUpdate {
            state: Some("Running".into()),
            ..DeploymentUpdate::default()
        },
        DeploymentUpdate {
            scoring_uri: Some(Some("http://x y".into())),
            ..DeploymentUpdate::default()
        },
    ] {
        let err = reg.update_deployment("svc", &update).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{update:?}: {err}");
    }
    let err = reg
        .update_deployment(
            "svc",
            &DeploymentUpdate {
                image: Some(r("ghost")),
                state: Some("stopped".into()),
                ..DeploymentUpdate::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A refused update changes nothing.
    assert_eq!(reg.get_deployment("svc").unwrap().state, "starting");
    let err = reg
        .update_deployment("ghost", &DeploymentUpdate::default())
        .unwrap_err();
    assert_eq!(err.to_string(), "no deployment named \"ghost\"");
    assert_eq!(reg.list_deployments().unwrap().len(), 1);
}
