//! Deployment records: an image running as a service (`accel services`),
//! either on this machine (`local`, a supervised `accel serve`) or on a
//! Kubernetes cluster (`kubernetes`).
//!
//! The registry only records deployments; starting, supervising and stopping
//! them is the caller's job. A record names its image (which must have
//! succeeded when the record is created or pointed at another image; the
//! image cannot be deleted while a deployment uses it, see `delete.rs`), a
//! free-form `state` the caller keeps current, and where to reach it.
//!
//! # One model per device
//!
//! A local deployment may hold an accelerator device (`--device`). At most
//! one local deployment holds a given device: the schema enforces it with a
//! partial unique index, and [`Registry::create_deployment`] refuses a busy
//! device with a message naming the deployment and model that hold it
//! ([`Registry::deployment_on_device`] answers the same question up front).
//! A record holds its device until it is deleted, whatever its state.

use crate::error::{RegistryError, Result};
use crate::images::{self, SUCCEEDED};
use crate::register::now_rfc3339;
use crate::validate;
use crate::Registry;
use accel_core::name::{validate_name, NameRef};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

/// The targets the schema allows.
const TARGETS: &[&str] = &["local", "kubernetes"];

/// The state of a newly created deployment.
const INITIAL_STATE: &str = "starting";

/// Longest device name, in bytes.
const MAX_DEVICE_LEN: usize = 128;
/// Longest scoring URI, in bytes.
const MAX_URI_LEN: usize = 2048;

/// What [`Registry::create_deployment`] needs to record a deployment.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// The deployment's name (same rules as model names), unique.
    pub name: String,
    /// `local` or `kubernetes`.
    pub target: String,
    /// The image it runs; must have succeeded. Without a version: the latest.
    pub image: NameRef,
    /// The accelerator device it holds (local deployments hold it alone),
    /// e.g. `cuda:0`; printable ASCII without spaces, at most 128 bytes.
    pub device: Option<String>,
    /// The port it listens on, when known.
    pub port: Option<u16>,
    /// Target-specific settings (JSON, at most 1 MiB serialized).
    pub config: serde_json::Value,
}

/// A deployment, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// The deployment's name.
    pub name: String,
    /// `local` or `kubernetes`.
    pub target: String,
    /// The image it runs, as `name:version`.
    pub image: String,
    /// What its caller last recorded: `starting` when created, then e.g.
    /// `running`, `restarting`, `failed`, `stopped`, `applied`.
    pub state: String,
    /// The device it holds.
    pub device: Option<String>,
    /// The port it listens on.
    pub port: Option<u16>,
    /// The process supervising it (local deployments).
    pub pid: Option<u32>,
    /// Where to send scoring requests.
    pub scoring_uri: Option<String>,
    /// Target-specific settings.
    pub config: serde_json::Value,
    /// When it was created, RFC 3339 UTC with second precision.
    pub created: String,
    /// When it was last updated, RFC 3339 UTC with second precision.
    pub updated: String,
}

/// Changes to a deployment ([`Registry::update_deployment`]): each `Some`
/// replaces that field (`Some(None)` clears an optional one); `None` leaves
/// it as it is.
#[derive(Debug, Clone, Default)]
pub struct DeploymentUpdate {
    /// A new state (1 to 32 lower-case letters, digits, `-` or `_`).
    pub state: Option<String>,
    /// The supervising process.
    pub pid: Option<Option<u32>>,
    /// The port.
    pub port: Option<Option<u16>>,
    /// The scoring URI.
    pub scoring_uri: Option<Option<String>>,
    /// Another image (must have succeeded), e.g. to replace the model on a
    /// device.
    pub image: Option<NameRef>,
    /// New target-specific settings.
    pub config: Option<serde_json::Value>,
}

/// Columns read by [`load`], in order.
const SELECT: &str = "SELECT d.id, d.name, d.target, i.name || ':' || i.version, d.state, \
     d.device, d.port, d.pid, d.scoring_uri, d.config, d.created, d.updated \
     FROM deployments d JOIN images i ON i.id = d.image_id";

/// Loads the deployments matching `where_sql` (appended to the select; may
/// reference `d.` and `i.`).
pub(crate) fn load(
    conn: &Connection,
    where_sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<(i64, DeploymentRecord)>> {
    let sql = format!("{SELECT} {where_sql}");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, Option<i64>>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, String>(9)?,
            r.get::<_, String>(10)?,
            r.get::<_, String>(11)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, target, image, state, device, port, pid, uri, config, created, updated) =
            row?;
        let config = serde_json::from_str(&config).map_err(|e| {
            RegistryError::DataLoss(format!(
                "deployment \"{name}\" has an unreadable stored config: {e}"
            ))
        })?;
        out.push((
            id,
            DeploymentRecord {
                name,
                target,
                image,
                state,
                device,
                port: port.and_then(|p| u16::try_from(p).ok()),
                pid: pid.and_then(|p| u32::try_from(p).ok()),
                scoring_uri: uri,
                config,
                created,
                updated,
            },
        ));
    }
    Ok(out)
}

/// The deployment named `name`, with its row id, or NotFound naming it.
fn load_by_name(conn: &Connection, name: &str) -> Result<(i64, DeploymentRecord)> {
    load(conn, "WHERE d.name = ?1", &[&name])?
        .pop()
        .ok_or_else(|| RegistryError::NotFound(format!("no deployment named \"{name}\"")))
}

/// The row id of the image `r` names, refusing (FailedPrecondition) one
/// that has not succeeded (as read: a build whose process vanished is
/// failed).
fn deployable_image(conn: &Connection, r: &NameRef) -> Result<i64> {
    let id = images::resolve_id(conn, r)?;
    let image = images::load_by_id(conn, id)?;
    if image.state != SUCCEEDED {
        return Err(RegistryError::FailedPrecondition(format!(
            "image \"{}\" {}; only a succeeded image can be deployed",
            image.reference(),
            images::state_phrase(&image.state)
        )));
    }
    Ok(id)
}

/// The local deployment holding `device` and the model its image packages.
fn holder(conn: &Connection, device: &str) -> Result<Option<(DeploymentRecord, String)>> {
    let Some((id, record)) = load(
        conn,
        "WHERE d.target = 'local' AND d.device = ?1",
        &[&device],
    )?
    .pop() else {
        return Ok(None);
    };
    let model: String = conn.query_row(
        "SELECT m.name || ':' || m.version FROM deployments d JOIN images i ON i.id = d.image_id
         JOIN models m ON m.id = i.model_id WHERE d.id = ?1",
        [id],
        |r| r.get(0),
    )?;
    Ok(Some((record, model)))
}

fn check_target(target: &str) -> Result<()> {
    if !TARGETS.contains(&target) {
        return Err(RegistryError::InvalidArgument(format!(
            "unknown deployment target {target:?} (known: {})",
            TARGETS.join(", ")
        )));
    }
    Ok(())
}

fn check_uri(uri: &Option<String>) -> Result<()> {
    match uri {
        Some(u) => validate::word("scoring URI", u, MAX_URI_LEN),
        None => Ok(()),
    }
}

impl Registry {
    /// Records a new deployment in state `starting`. AlreadyExists when the
    /// name is taken; NotFound when the image does not exist;
    /// FailedPrecondition when the image has not succeeded, or, for a local
    /// deployment, when another local deployment holds the device (`device
    /// "D" is used by deployment "X" (model "M")`).
    pub fn create_deployment(&self, new: &NewDeployment) -> Result<DeploymentRecord> {
        validate_name(&new.name)?;
        check_target(&new.target)?;
        if let Some(d) = &new.device {
            validate::word("device", d, MAX_DEVICE_LEN)?;
        }
        let config = validate::json_text("deployment config", &new.config)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken = tx
            .query_row(
                "SELECT 1 FROM deployments WHERE name = ?1",
                [&new.name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if taken {
            return Err(RegistryError::AlreadyExists(format!(
                "deployment \"{}\" already exists",
                new.name
            )));
        }
        let image_id = deployable_image(&tx, &new.image)?;
        if let (Some(device), "local") = (&new.device, new.target.as_str()) {
            if let Some((holder, model)) = holder(&tx, device)? {
                return Err(RegistryError::FailedPrecondition(format!(
                    "device \"{device}\" is used by deployment \"{}\" (model \"{model}\")",
                    holder.name
                )));
            }
        }
        let now = now_rfc3339();
        tx.execute(
            "INSERT INTO deployments (name, target, image_id, state, device, port, config,
                                      created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            params![
                new.name,
                new.target,
                image_id,
                INITIAL_STATE,
                new.device,
                new.port,
                config,
                now
            ],
        )?;
        let (_, record) = load_by_name(&tx, &new.name)?;
        tx.commit()?;
        Ok(record)
    }

    /// Applies `update` to the deployment `name` and sets its `updated` time.
    /// NotFound when there is none (or the new image does not exist);
    /// FailedPrecondition when the new image has not succeeded.
    pub fn update_deployment(
        &self,
        name: &str,
        update: &DeploymentUpdate,
    ) -> Result<DeploymentRecord> {
        if let Some(s) = &update.state {
            validate::state(s)?;
        }
        if let Some(uri) = &update.scoring_uri {
            check_uri(uri)?;
        }
        let config = update
            .config
            .as_ref()
            .map(|c| validate::json_text("deployment config", c))
            .transpose()?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (id, _) = load_by_name(&tx, name)?;
        if let Some(s) = &update.state {
            tx.execute(
                "UPDATE deployments SET state = ?1 WHERE id = ?2",
                params![s, id],
            )?;
        }
        if let Some(pid) = update.pid {
            tx.execute(
                "UPDATE deployments SET pid = ?1 WHERE id = ?2",
                params![pid, id],
            )?;
        }
        if let Some(port) = update.port {
            tx.execute(
                "UPDATE deployments SET port = ?1 WHERE id = ?2",
                params![port, id],
            )?;
        }
        if let Some(uri) = &update.scoring_uri {
            tx.execute(
                "UPDATE deployments SET scoring_uri = ?1 WHERE id = ?2",
                params![uri, id],
            )?;
        }
        if let Some(r) = &update.image {
            let image_id = deployable_image(&tx, r)?;
            tx.execute(
                "UPDATE deployments SET image_id = ?1 WHERE id = ?2",
                params![image_id, id],
            )?;
        }
        if let Some(c) = &config {
            tx.execute(
                "UPDATE deployments SET config = ?1 WHERE id = ?2",
                params![c, id],
            )?;
        }
        tx.execute(
            "UPDATE deployments SET updated = ?1 WHERE id = ?2",
            params![now_rfc3339(), id],
        )?;
        let (_, record) = load_by_name(&tx, name)?;
        tx.commit()?;
        Ok(record)
    }

    /// The deployment `name` (NotFound naming it when there is none).
    pub fn get_deployment(&self, name: &str) -> Result<DeploymentRecord> {
        validate_name(name)?;
        Ok(load_by_name(&self.conn(), name)?.1)
    }

    /// All deployments, ordered by name.
    pub fn list_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        Ok(load(&self.conn(), "ORDER BY d.name", &[])?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Deletes the record of deployment `name` (NotFound when there is none),
    /// freeing its device. Stopping what it runs is the caller's job, first.
    pub fn delete_deployment(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let deleted = self
            .conn()
            .execute("DELETE FROM deployments WHERE name = ?1", [name])?;
        if deleted == 0 {
            return Err(RegistryError::NotFound(format!(
                "no deployment named \"{name}\""
            )));
        }
        Ok(())
    }

    /// The local deployment holding `device`, if any.
    pub fn deployment_on_device(&self, device: &str) -> Result<Option<DeploymentRecord>> {
        Ok(holder(&self.conn(), device)?.map(|(d, _)| d))
    }
}
