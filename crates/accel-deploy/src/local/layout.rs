//! The files of a local deployment, under `<home>/deployments/<name>/`:
//!
//! ```text
//! bundle/          the model bundle `accel serve --bundle` loads
//! server.log       the server's stdout and stderr, and one line per
//!                  supervisor action (start, exit, restart, stop)
//! server.log.1     the previous log, once server.log outgrew its limit
//! supervisor.log   the supervisor process's own stdout and stderr
//! ```

use std::path::{Path, PathBuf};

/// The directory of one local deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentDir {
    root: PathBuf,
}

impl DeploymentDir {
    /// The directory of deployment `name` under the Accel home `home`. The
    /// name must already be validated (no path separators).
    pub fn new(home: &Path, name: &str) -> Self {
        DeploymentDir {
            root: home.join("deployments").join(name),
        }
    }

    /// The deployment's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The model bundle served.
    pub fn bundle(&self) -> PathBuf {
        self.root.join("bundle")
    }

    /// The server's log.
    pub fn server_log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The supervisor's own log.
    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join("supervisor.log")
    }
}
