//! `vnet adapt status`: what the adaptor service (`vadapt run`) is doing, from its status
//! file (records in `vadapt::status`).

use std::path::PathBuf;

use anyhow::Result;
use vadapt_service::status_file;
use vnet_lab::lab_status_path;

/// `vnet adapt ...`.
#[derive(clap::Subcommand, Debug)]
pub enum AdaptCommand {
    /// Show what the adaptor (`vadapt run`) is doing: the plan in force and the last
    /// decisions with the objective before and after.
    Status {
        /// The lab whose adaptor to show.
        #[arg(long, conflicts_with = "status")]
        lab: Option<String>,
        /// The adaptor's status file (`vadapt run --status FILE`).
        #[arg(long, value_name = "FILE")]
        status: Option<PathBuf>,
        /// How many decisions to show.
        #[arg(long, default_value_t = 5)]
        last: usize,
        /// Print the whole status as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `vnet adapt ...`.
pub fn run(cmd: AdaptCommand) -> Result<()> {
    match cmd {
        AdaptCommand::Status {
            lab,
            status,
            last,
            json,
        } => {
            let path = match (lab, status) {
                (_, Some(p)) => p,
                (Some(lab), None) => lab_status_path(&lab),
                (None, None) => anyhow::bail!("name the adaptor: --lab NAME or --status FILE"),
            };
            let st = status_file::read(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", st.text(last));
            }
            Ok(())
        }
    }
}
