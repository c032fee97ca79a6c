//! `accel services keys ...`: API keys of services, stored hashed.

use crate::context::GlobalArgs;
use crate::output::print_json;
use accel_registry::KeySlot;
use accel_server::auth::ApiKey;
use clap::{Args, Subcommand, ValueEnum};

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new key for a slot and print it (once: only its hash is stored).
    Regenerate(RegenerateArgs),
    /// List a service's key slots and when they were set (never the keys).
    List(ListArgs),
}

/// Key slots.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SlotArg {
    /// The primary key.
    Primary,
    /// The secondary key.
    Secondary,
}

/// `accel services keys regenerate`.
#[derive(Debug, Args)]
pub struct RegenerateArgs {
    /// Service name.
    pub service: String,
    /// Which slot.
    #[arg(long, value_enum, default_value = "primary")]
    pub slot: SlotArg,
    /// JSON output (`{"service","slot","key"}`).
    #[arg(long)]
    pub json: bool,
}

/// `accel services keys list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Service name.
    pub service: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Dispatches a key subcommand.
pub fn run(global: &GlobalArgs, keys: KeysCommand) -> anyhow::Result<()> {
    let registry = global.registry()?;
    match keys {
        KeysCommand::Regenerate(a) => {
            accel_core::name::validate_name(&a.service)?;
            let slot = match a.slot {
                SlotArg::Primary => KeySlot::Primary,
                SlotArg::Secondary => KeySlot::Secondary,
            };
            let key = ApiKey::generate()?;
            registry.set_service_key(&a.service, slot, &key.hash().to_hex())?;
            if a.json {
                print_json(
                    &serde_json::json!({"service": a.service, "slot": slot, "key": key.expose()}),
                )
            } else {
                println!("{}", key.expose());
                Ok(())
            }
        }
        KeysCommand::List(a) => {
            let keys = registry.service_keys(&a.service)?;
            let rows: Vec<_> = keys
                .iter()
                .map(|k| serde_json::json!({"slot": k.slot, "created": k.created}))
                .collect();
            if a.json {
                print_json(&rows)
            } else {
                for k in &keys {
                    println!("{:<10} set {}", k.slot, k.created);
                }
                Ok(())
            }
        }
    }
}
