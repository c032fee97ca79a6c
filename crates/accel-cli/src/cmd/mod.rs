//! One module per subcommand.

pub mod bench;
pub mod convert;
pub mod engines;
pub mod images;
pub mod load;
pub mod models;
pub mod operations;
pub mod predict;
pub mod quickstart;
pub mod registry;
pub mod score;
pub mod serve;
pub mod services;
pub mod train;
pub mod zoo;
