//! The Accel model zoo (issue 7): a checked-in catalog of public pretrained
//! models (`catalog.toml`: URL pinned to a commit or a hashed file name,
//! published sha256 and size, where they were published, licence,
//! preprocessing preset, labels, the seed's tensor names) and a downloader
//! that resumes, retries and checks every byte before a file enters the
//! cache.
//!
//! ```no_run
//! # async fn f() -> Result<(), accel_zoo::ZooError> {
//! use accel_zoo::{fetch, Catalog, FetchRequest};
//! let catalog = Catalog::bundled();
//! let entry = catalog.get("mobilenetv2-int8")?;
//! let fetched = fetch(&FetchRequest::for_entry(entry, "/tmp/zoo")).await?;
//! println!("{}", fetched.path.display());
//! # Ok(()) }
//! ```

pub mod catalog;
pub mod error;
pub mod fetch;

pub use catalog::{Catalog, Format, Labels, Task, ZooEntry};
pub use error::ZooError;
pub use fetch::{fetch, mirror_url, Checksum, FetchRequest, Fetched, Progress};
