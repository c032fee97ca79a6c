//! Pushing an image over the OCI distribution API (`oci-client`).

use super::blobs::BlobSource;
use super::read_manifest;
use crate::DeployError;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{Descriptor, Digest, MediaType};
use std::fmt;
use std::io::Read;
use std::time::Duration;

/// How to authenticate to the registry. Registries that use token auth
/// (`WWW-Authenticate: Bearer realm=…`) get the user name and password
/// exchanged for a token by `oci-client`.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum PushAuth {
    /// No credentials.
    #[default]
    Anonymous,
    /// User name and password (or access token used as a password).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A bearer token obtained elsewhere.
    Bearer(String),
}

impl fmt::Debug for PushAuth {
    /// Never prints secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushAuth::Anonymous => f.write_str("Anonymous"),
            PushAuth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            PushAuth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl PushAuth {
    fn to_registry_auth(&self) -> RegistryAuth {
        match self {
            PushAuth::Anonymous => RegistryAuth::Anonymous,
            PushAuth::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            PushAuth::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// Options of [`push`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Credentials.
    pub auth: PushAuth,
    /// Speak plain HTTP instead of HTTPS (a registry on loopback or a
    /// trusted network, like `skopeo --dest-tls-verify=false`).
    pub insecure_http: bool,
}

/// What [`push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The reference pushed to, in full (`127.0.0.1:5000/accel/resnet:3`).
    pub reference: String,
    /// The manifest digest, as the registry now serves it.
    pub digest: Digest,
    /// Blobs uploaded (layers and configuration the registry lacked).
    pub uploaded: Vec<Digest>,
    /// Blobs the registry already had (`HEAD` said so): not sent again.
    pub skipped: Vec<Digest>,
    /// Bytes of the uploaded blobs.
    pub uploaded_bytes: u64,
}

/// Pushes the image whose manifest is `manifest` (blobs read from
/// `source`) to `reference` (`HOST[:PORT]/REPOSITORY:TAG`; without a host,
/// Docker Hub as `docker` would), layers and configuration first, each
/// only if the registry does not have it yet, then the manifest with its
/// exact bytes (so the digest stays ours).
///
/// Errors: `InvalidArgument` for a malformed reference or one whose digest
/// is not the manifest's; `Unavailable` when the registry cannot be
/// reached; `Remote` with the registry's own message when it refuses
/// (wrong credentials, no push permission, invalid manifest).
pub async fn push(
    source: &dyn BlobSource,
    manifest: &Descriptor,
    reference: &str,
    options: &PushOptions,
) -> Result<PushReport, DeployError> {
    let image: Reference = reference.parse().map_err(|e| {
        DeployError::InvalidArgument(format!(
            "invalid image reference {reference:?} ({e}): expected HOST[:PORT]/REPOSITORY:TAG"
        ))
    })?;
    if let Some(digest) = image.digest() {
        if digest != manifest.digest().as_ref() {
            return Err(DeployError::InvalidArgument(format!(
                "{reference} names digest {digest}, but the image is {}",
                manifest.digest()
            )));
        }
    }
    let (manifest_bytes, parsed) = read_manifest(source, manifest)?;
    let registry = image.resolve_registry().to_string();
    let fail = |e: OciDistributionError, what: &str| remote_error(e, &registry, what, options);

    ensure_crypto_provider();
    let client = Client::new(ClientConfig {
        protocol: if options.insecure_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // One PUT per blob: every registry takes it (chunked uploads are
        // optional in practice), and the body streams from the source.
        use_monolithic_push: true,
        connect_timeout: Some(Duration::from_secs(30)),
        ..ClientConfig::default()
    });
    let auth = options.auth.to_registry_auth();
    client
        .auth(&image, &auth, RegistryOperation::Push)
        .await
        .map_err(|e| fail(e, "authenticating"))?;

    let mut blobs: Vec<&Descriptor> = parsed.layers().iter().collect();
    blobs.push(parsed.config());
    let mut report = PushReport {
        reference: image.whole(),
        digest: manifest.digest().clone(),
        uploaded: Vec::new(),
        skipped: Vec::new(),
        uploaded_bytes: 0,
    };
    for blob in blobs {
        let digest = blob.digest();
        if report.uploaded.contains(digest) || report.skipped.contains(digest) {
            continue;
        }
        let what = format!("blob {digest}");
        if client
            .blob_exists(&image, digest.as_ref())
            .await
            .map_err(|e| fail(e, &format!("checking {what}")))?
        {
            tracing::debug!(%digest, "registry already has the blob");
            report.skipped.push(digest.clone());
            continue;
        }
        tracing::info!(%digest, size = blob.size(), "uploading blob");
        if blob.media_type() == &MediaType::ImageConfig {
            let bytes = source.read_blob(digest)?;
            super::check_bytes(&bytes, blob)?;
            client
                .push_blob(&image, bytes, digest.as_ref())
                .await
                .map_err(|e| fail(e, &format!("uploading {what}")))?;
        } else {
            let stream = blob_stream(source.open_blob(digest)?);
            client
                .push_blob_stream(&image, stream, digest.as_ref(), Some(blob.size()))
                .await
                .map_err(|e| fail(e, &format!("uploading {what}")))?;
        }
        report.uploaded.push(digest.clone());
        report.uploaded_bytes += blob.size();
    }

    let content_type = http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
    client
        .push_manifest_raw(&image, manifest_bytes, content_type)
        .await
        .map_err(|e| fail(e, "pushing the manifest"))?;
    tracing::info!(reference = %report.reference, digest = %report.digest, "pushed");
    Ok(report)
}

/// reqwest (under `oci-client`) is built without a default rustls crypto
/// provider: install ring's, as the rest of the workspace uses, unless the
/// process already chose one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The blob as a stream of chunks read on the blocking pool.
fn blob_stream(
    mut reader: Box<dyn Read + Send>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static {
    const CHUNK: usize = 1 << 20;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        let result = loop {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == CHUNK {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(OciDistributionError::IoError(e)));
            return;
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        if tx.blocking_send(Ok(bytes::Bytes::from(buf))).is_err() {
            return;
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// A registry failure in words: the registry's own message where it gave
/// one, what was being done, and what to check.
fn remote_error(
    error: OciDistributionError,
    registry: &str,
    what: &str,
    options: &PushOptions,
) -> DeployError {
    let refused = |status: &str| {
        let (who, advice) = match &options.auth {
            PushAuth::Anonymous => (
                "requires credentials".to_string(),
                "give a user name and password",
            ),
            PushAuth::Basic { username, .. } => (
                format!("rejected the credentials of user {username:?}"),
                "check the user name and password",
            ),
            PushAuth::Bearer(_) => ("rejected the token".to_string(), "check the token"),
        };
        format!("registry {registry} {who} ({status} while {what}): {advice}")
    };
    match error {
        OciDistributionError::RequestError(e) => {
            if let Some(status) = e.status() {
                let code = status.as_u16();
                let reason = status.canonical_reason().unwrap_or("");
                let text = format!("registry {registry} answered {code} {reason} while {what}");
                return match code {
                    401 => DeployError::Remote(refused(&format!("{code} {reason}"))),
                    403 => DeployError::Remote(format!(
                        "{text}: the credentials do not allow pushing there"
                    )),
                    502..=504 => DeployError::Unavailable(text),
                    _ => DeployError::Remote(text),
                };
            }
            let chain = error_chain(&e);
            if e.is_connect() || e.is_timeout() {
                let hint = if options.insecure_http {
                    ""
                } else {
                    " (if it speaks plain HTTP, push with insecure HTTP allowed)"
                };
                DeployError::Unavailable(format!(
                    "cannot reach registry {registry} (while {what}): {chain}{hint}"
                ))
            } else {
                DeployError::Remote(format!("registry {registry}, while {what}: {chain}"))
            }
        }
        OciDistributionError::AuthenticationFailure(reason) => DeployError::Remote(format!(
            "{}: {}",
            refused("authentication failed"),
            registry_message(&reason)
        )),
        OciDistributionError::UnauthorizedError { .. } => {
            DeployError::Remote(refused("not authorized"))
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let message = registry_message(&message);
            let text = format!("registry {registry} answered {code} while {what}: {message}");
            match code {
                401 => DeployError::Remote(format!("{}: {message}", refused("401 Unauthorized"))),
                502..=504 => DeployError::Unavailable(text),
                _ => DeployError::Remote(text),
            }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let messages: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect();
            DeployError::Remote(format!(
                "registry {registry} refused (while {what}): {}",
                messages.join("; ")
            ))
        }
        other => DeployError::Remote(format!(
            "registry {registry}, while {what}: {}",
            error_chain(&other)
        )),
    }
}

/// The `errors[].code: message` of an OCI error envelope, or the text itself.
fn registry_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Envelope>(body) {
        Ok(envelope) if !envelope.errors.is_empty() => envelope
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => body.trim().to_string(),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_envelopes_are_read() {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
        assert_eq!(
            registry_message(body),
            "UNAUTHORIZED: authentication required"
        );
        assert_eq!(registry_message(" plain text\n"), "plain text");
    }

    #[test]
    fn secrets_are_not_printed() {
        let auth = PushAuth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
