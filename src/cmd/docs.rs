//! `tm-tui man` and `tm-tui completions`: the manual pages and the shell
//! completion scripts, generated from the command-line definition itself
//! so they can never disagree with `--help`.

use std::path::Path;

use anyhow::{Context, Result};

/// The manual page of `cmd` (tm-tui(1)), or of its subcommand `sub`
/// (tm-tui-record(1)), as roff on stdout; or every page into `dir`.
pub fn man(cmd: clap::Command, sub: Option<&str>, dir: Option<&Path>) -> Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Built, subcommands know their full name (tm-tui-record).
    cmd.build();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(cmd, dir)
            .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
        return Ok(());
    }
    let page = match sub {
        Some(name) => cmd
            .get_subcommands()
            .find(|s| s.get_name() == name && !s.is_hide_set())
            .cloned()
            .with_context(|| {
                let names: Vec<&str> = cmd
                    .get_subcommands()
                    .filter(|s| !s.is_hide_set())
                    .map(|s| s.get_name())
                    .collect();
                format!("no subcommand '{name}' (one of: {})", names.join(", "))
            })?,
        None => cmd,
    };
    super::to_stdout(|w| clap_mangen::Man::new(page).render(w))
}

/// The completion script of `shell` for `cmd`, on stdout.
pub fn completions(cmd: clap::Command, shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = without_hidden(&cmd);
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name.clone(), &mut buf);
    if shell == clap_complete::Shell::Bash {
        // clap_complete 4.6 names the subcommands' cases of a binary with
        // a '-' in its name once as `tm__tui` and once as
        // `tm__subcmd__tui`: no subcommand's options would complete.
        let wrong = name.replace('-', "__subcmd__");
        let right = name.replace('-', "__");
        buf = String::from_utf8_lossy(&buf)
            .replace(&wrong, &right)
            .into_bytes();
    }
    super::to_stdout(|w| w.write_all(&buf))
}

/// `cmd` without its hidden subcommands (bench), which the completion
/// generators would offer: names, arguments and subcommands are all a
/// completion script needs.
fn without_hidden(cmd: &clap::Command) -> clap::Command {
    let mut c = clap::Command::new(cmd.get_name().to_string())
        .args(cmd.get_arguments().cloned())
        .args_conflicts_with_subcommands(cmd.is_args_conflicts_with_subcommands_set());
    if let Some(about) = cmd.get_about() {
        c = c.about(about.clone());
    }
    if let Some(v) = cmd.get_version() {
        c = c.version(v.to_string());
    }
    for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        c = c.subcommand(without_hidden(s));
    }
    c
}
