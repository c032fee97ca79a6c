//! The `kubernetes` target: an image pushed to a registry the cluster can
//! pull from, deployed as a Deployment (probes on the health endpoints,
//! non-root), a Service, an optional HorizontalPodAutoscaler and an optional
//! Secret with the API keys, applied server-side (field manager `accel`);
//! `wait` follows the rollout, `delete` removes exactly the objects that
//! carry the service's labels.

use super::{DeployArgs, NameArgs, WaitArgs};
use crate::context::GlobalArgs;
use crate::output::print_json;
use accel_core::name::NameRef;
use accel_deploy::kube::{self, Autoscale, ConnectOptions, KubeDeployment};
use accel_registry::{DeploymentRecord, DeploymentUpdate, NewDeployment};
use accel_server::auth::ApiKey;
use anyhow::{bail, Context};
use std::time::Duration;

fn connect_options(a: &DeployArgs) -> ConnectOptions {
    ConnectOptions {
        kubeconfig: a.kubeconfig.clone(),
        context: a.context.clone(),
        namespace: a.namespace.clone(),
    }
}

fn options_of(record: &DeploymentRecord) -> ConnectOptions {
    let get = |k: &str| {
        record
            .config
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    ConnectOptions {
        kubeconfig: get("kubeconfig").map(Into::into),
        context: get("context"),
        namespace: get("namespace"),
    }
}

/// `accel services deploy NAME --target kubernetes …`.
pub fn deploy(global: &GlobalArgs, a: &DeployArgs) -> anyhow::Result<()> {
    for (flag, set) in [
        ("--port", a.port.is_some()),
        ("--http-port", a.http_port.is_some()),
        ("--device", a.device.is_some()),
    ] {
        if set {
            bail!("{flag} is for --target local; on Kubernetes the Service has ports 8500 (gRPC) and 8501 (HTTP)");
        }
    }
    // The image reference the cluster pulls: given, or where the registry
    // image was pushed last.
    let registry_image = match &a.image {
        Some(i) => Some(global.registry()?.get_image(&i.parse::<NameRef>()?)?),
        None => None,
    };
    let image_ref = match (&a.image_ref, &registry_image) {
        (Some(r), _) => r.clone(),
        (None, Some(img)) => img
            .locations
            .last()
            .map(|l| l.reference.clone())
            .with_context(|| {
                format!(
                    "image {} was never pushed: `accel images push {} REGISTRY/REPO:TAG` first, or give --image-ref",
                    img.reference(),
                    img.reference()
                )
            })?,
        (None, None) => bail!("--target kubernetes needs --image-ref REGISTRY/REPO:TAG (or --image of a pushed image)"),
    };
    let mut d = KubeDeployment::new(
        a.name.clone(),
        a.namespace.clone().unwrap_or_else(|| "default".into()),
        image_ref.clone(),
    );
    d.replicas = a.replicas;
    d.autoscale = a
        .autoscale
        .as_deref()
        .map(|s| s.parse::<Autoscale>())
        .transpose()?;
    let key = if a.auth {
        let key = ApiKey::generate()?;
        d.api_keys = vec![key.expose().to_string()];
        Some(key)
    } else {
        None
    };
    let objects = kube::manifests(&d)?;
    if a.dry_run {
        match a.output.as_deref().unwrap_or("yaml") {
            "yaml" => print!("{}", kube::to_yaml_stream(&objects)?),
            "json" => print_json(&objects)?,
            other => bail!("-o {other}: expected yaml or json"),
        }
        return Ok(());
    }
    let Some(image) = registry_image else {
        bail!("applying to a cluster records the deployment: give --image NAME[:V] (the registry image behind --image-ref), or use --dry-run");
    };
    // The namespace is the flag's, else the kubeconfig context's.
    let rt = crate::output::current_thread_runtime()?;
    let target = rt.block_on(kube::connect(&connect_options(a)))?;
    d.namespace = target.namespace.clone();
    let objects = kube::manifests(&d)?;
    let registry = global.registry()?;
    let record = registry.create_deployment(&NewDeployment {
        name: a.name.clone(),
        target: "kubernetes".into(),
        image: NameRef {
            name: image.name.clone(),
            version: Some(image.version),
        },
        device: None,
        port: None,
        config: serde_json::json!({
            "image_ref": image_ref,
            "namespace": target.namespace,
            "context": a.context,
            "kubeconfig": a.kubeconfig,
            "replicas": a.replicas,
            "autoscale": a.autoscale,
            "auth": a.auth,
        }),
    })?;
    let applied = rt.block_on(async {
        let refs = kube::apply(&target.client, &objects).await?;
        Ok::<_, accel_deploy::DeployError>((target.cluster_url.clone(), refs))
    });
    let (cluster, refs) = match applied {
        Ok(x) => x,
        Err(e) => {
            let _ = registry.update_deployment(
                &record.name,
                &DeploymentUpdate {
                    state: Some("failed".into()),
                    ..DeploymentUpdate::default()
                },
            );
            return Err(e.into());
        }
    };
    let uri = format!("{}.{}.svc:8500", d.service, d.namespace);
    registry.update_deployment(
        &record.name,
        &DeploymentUpdate {
            state: Some("applied".into()),
            scoring_uri: Some(Some(format!("grpc://{uri}"))),
            ..DeploymentUpdate::default()
        },
    )?;
    let objects: Vec<String> = refs
        .iter()
        .map(|r| format!("{}/{}", r.kind, r.name))
        .collect();
    if a.json {
        let mut v = serde_json::json!({
            "service": a.name, "cluster": cluster, "namespace": d.namespace,
            "objects": objects, "scoring_uri": format!("grpc://{uri}"), "state": "applied",
        });
        if let Some(k) = &key {
            v["key"] = k.expose().into();
        }
        return print_json(&v);
    }
    println!("{}", a.name);
    println!("applied: {} to {cluster}", objects.join(", "));
    println!("scoring_uri: grpc://{uri} (in the cluster)");
    if let Some(k) = &key {
        println!("key: {}", k.expose());
    }
    Ok(())
}

/// `accel services wait NAME` for a Kubernetes deployment.
pub fn wait(global: &GlobalArgs, record: &DeploymentRecord, a: &WaitArgs) -> anyhow::Result<()> {
    let opts = options_of(record);
    let waited = crate::output::current_thread_runtime()?.block_on(async {
        let target = kube::connect(&opts).await?;
        kube::wait(
            &target.client,
            &target.namespace,
            &record.name,
            Duration::from_secs_f64(a.timeout.max(0.0)),
        )
        .await
    });
    let registry = global.registry()?;
    let status = match waited {
        Ok(s) => s,
        Err(e) => {
            let _ = registry.update_deployment(
                &record.name,
                &DeploymentUpdate {
                    state: Some("failed".into()),
                    ..DeploymentUpdate::default()
                },
            );
            return Err(e.into());
        }
    };
    registry.update_deployment(
        &record.name,
        &DeploymentUpdate {
            state: Some(if status.complete { "running" } else { "failed" }.into()),
            ..DeploymentUpdate::default()
        },
    )?;
    if a.json {
        print_json(&serde_json::json!({
            "service": record.name, "complete": status.complete, "failed": status.failed,
            "ready": status.ready, "desired": status.desired, "message": status.message,
        }))?;
    } else {
        println!(
            "{}: {}/{} ready; {}",
            record.name, status.ready, status.desired, status.message
        );
    }
    if !status.complete {
        bail!(
            "rollout of {} did not complete: {}",
            record.name,
            status.message
        );
    }
    Ok(())
}

/// `accel services show NAME` for a Kubernetes deployment.
pub fn show(record: &DeploymentRecord, a: &NameArgs) -> anyhow::Result<()> {
    if a.json {
        return print_json(record);
    }
    println!("service:     {}", record.name);
    println!("target:      {}", record.target);
    println!("image:       {}", record.image);
    println!("state:       {}", record.state);
    if let Some(u) = &record.scoring_uri {
        println!("scoring_uri: {u}");
    }
    println!("config:      {}", record.config);
    Ok(())
}

/// `accel services delete NAME` for a Kubernetes deployment: the labelled
/// objects, then the record.
pub fn delete(global: &GlobalArgs, record: &DeploymentRecord, json: bool) -> anyhow::Result<()> {
    let objects = remove_objects(record)?;
    global.registry()?.delete_deployment(&record.name)?;
    if json {
        return print_json(&serde_json::json!({"service": record.name, "deleted": objects}));
    }
    for o in &objects {
        println!("deleted {o}");
    }
    println!("deleted deployment {}", record.name);
    Ok(())
}

/// Deletes the cluster objects of `record` (found by its labels); the
/// record stays. Returns `Kind/name` of each.
pub fn remove_objects(record: &DeploymentRecord) -> anyhow::Result<Vec<String>> {
    let opts = options_of(record);
    let deleted = crate::output::current_thread_runtime()?.block_on(async {
        let target = kube::connect(&opts).await?;
        kube::delete(&target.client, &target.namespace, &record.name).await
    })?;
    Ok(deleted
        .iter()
        .map(|r| format!("{}/{}", r.kind, r.name))
        .collect())
}
