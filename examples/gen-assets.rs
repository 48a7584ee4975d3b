//! Writes what a package ships beside the binary, from the clap definitions: the man page
//! `tcptop.1` and completions for bash (`tcptop.bash`), zsh (`_tcptop`) and fish
//! (`tcptop.fish`). `cargo run --locked --example gen-assets -- target/assets`

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    match write_assets() {
        Ok(dir) => {
            println!("gen-assets: wrote the man page and completions in {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("gen-assets: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_assets() -> Result<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        anyhow::bail!("usage: gen-assets DIR (where to write tcptop.1 and the completions)");
    };
    let dir = PathBuf::from(dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut command = tcptop::cli::Args::command();
    let page = dir.join("tcptop.1");
    let mut file = File::create(&page).with_context(|| format!("creating {}", page.display()))?;
    clap_mangen::Man::new(command.clone())
        .render(&mut file)
        .with_context(|| format!("writing {}", page.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, "tcptop", &dir)
            .with_context(|| format!("writing the {shell} completions in {}", dir.display()))?;
    }
    Ok(dir)
}
