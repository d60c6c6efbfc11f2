//! The `pmtu` command line: one file per verb, the scenario subcommands generated from the
//! registry ([`pmtu::scenarios::ALL`]), exit codes and signals. Nothing imports this folder.
pub mod bench;
pub mod bench_responder;
pub mod lab;
pub mod respond;
pub mod run;
pub mod serve;
pub mod stress;
mod stress_lab;

use std::{fmt, process::ExitCode};

use anyhow::{bail, Result};
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use pmtu::{
    lab::plan::DEFAULT_NAME, net::procfs::effective_capabilities, scenarios,
    xdp::responder::AttachMode,
};

/// Options every verb takes.
#[derive(Args, Debug)]
pub struct Globals {
    /// The lab to use: namespaces NAME-local and NAME-remote.
    #[arg(long, global = true, env = "PMTU_LAB", default_value = DEFAULT_NAME)]
    pub lab: String,
    /// XDP attach mode for the responder.
    #[arg(long, global = true, value_enum, default_value_t = AttachMode::Native)]
    pub xdp_mode: AttachMode,
    /// More log output (-v: debug, -vv: trace); RUST_LOG works too.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The exit codes, as `git bisect run` and CI read them.
pub mod exit {
    /// Every scenario passed (or was skipped).
    pub const PASSED: u8 = 0;
    /// A scenario FAILed: REMOTE is broken (`git bisect run`: bad). Also: a verb other than
    /// `run` failed.
    pub const FAILED: u8 = 1;
    /// A usage error: unknown option or scenario, a malformed variable.
    pub const USAGE: u8 = 2;
    /// Could not test: a LOCAL set-up error, REMOTE unreachable, a scenario ERROR and none
    /// FAILed (`git bisect run`: skip this commit).
    pub const COULD_NOT_TEST: u8 = 125;
}

const EXIT_CODES: &str = "\
Exit codes (pmtu run and the scenario subcommands; git bisect run reads them):
  0    every scenario passed
  1    a scenario FAILed: REMOTE is broken (bisect: bad)
  2    usage error: unknown option or scenario, a malformed variable
  125  could not test: LOCAL set-up error, REMOTE unreachable, a scenario ERROR and none
       FAILed (bisect: skip)
  130, 143, 129  stopped by SIGINT, SIGTERM, SIGHUP (after cleaning up; bisect stops)
Other verbs exit 0, or 1 on error (2 for usage errors).";

/// A bad command line or configuration: exits 2, like clap's own usage errors.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The exit code for an error that ended a verb: a signal's code when one stopped it, 2 for a
/// usage error, else `otherwise`.
pub fn error_exit_code(e: &anyhow::Error, otherwise: u8) -> ExitCode {
    if let Some(code) = pmtu::signals::exit_code() {
        return ExitCode::from(code);
    }
    if e.chain().any(|c| c.is::<Usage>()) {
        return ExitCode::from(exit::USAGE);
    }
    ExitCode::from(otherwise)
}

#[derive(Parser, Debug)]
#[command(
    name = "pmtu",
    version,
    about = "Path MTU Discovery regression suite around an XDP responder",
    after_help = EXIT_CODES,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub verb: Verb,
}

/// The verbs besides the scenarios.
#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Run scenarios: all of them in the original's order when none is named.
    Run {
        /// Scenario names (each also has its own subcommand, listed below).
        names: Vec<String>,
        #[command(flatten)]
        args: run::RunArgs,
    },
    /// The built-in lab: two network namespaces, a veth, REMOTE's services, the responder.
    Lab(lab::LabArgs),
    /// Run the XDP responder alone on an interface and print what it sees (Ctrl-C stops).
    Respond(respond::RespondArgs),
    /// REMOTE's built-in chargen and echo (used by the lab when inetd is missing).
    Serve(pmtu::serve::ServeArgs),
    /// Benchmarks.
    Bench(bench::BenchArgs),
    /// Many flows at once, each from its own fake host with its own MTU, each verified; then
    /// how many destinations' PMTU REMOTE kept.
    Stress(stress::StressArgs),
}

/// What the command line asks for: a verb, or one scenario by its own subcommand.
pub enum Request {
    Verb(Verb),
    Scenario(&'static str, run::RunArgs),
}

/// The whole command line: the verbs, then one subcommand per registered scenario with the
/// registry's text.
pub fn command() -> clap::Command {
    scenarios::every().fold(Cli::command(), |cmd, s| {
        cmd.subcommand(run::RunArgs::augment_args(
            clap::Command::new(s.name).about(s.about),
        ))
    })
}

/// Parses the process's arguments (clap prints help and usage errors and exits 2 itself).
pub fn parse() -> (Globals, Request) {
    let matches = command().get_matches();
    match from_matches(&matches) {
        Ok(parsed) => parsed,
        Err(e) => e.exit(),
    }
}

fn from_matches(matches: &clap::ArgMatches) -> Result<(Globals, Request), clap::Error> {
    let globals = Globals::from_arg_matches(matches)?;
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(s) = scenarios::find(name) {
            return Ok((
                globals,
                Request::Scenario(s.name, run::RunArgs::from_arg_matches(sub)?),
            ));
        }
    }
    Ok((globals, Request::Verb(Verb::from_arg_matches(matches)?)))
}

/// Runs what was asked for.
pub async fn dispatch(globals: Globals, request: Request) -> Result<ExitCode> {
    let ok = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    // A run that could not test says so with 125, for `git bisect run`.
    let tested = |r: Result<ExitCode>| {
        Ok(r.unwrap_or_else(|e| {
            eprintln!("pmtu: {e:#}");
            error_exit_code(&e, exit::COULD_NOT_TEST)
        }))
    };
    let (lab_name, mode) = (globals.lab.as_str(), globals.xdp_mode);
    match request {
        Request::Scenario(name, args) => {
            tested(run::cli(&[name.to_string()], args, lab_name, mode).await)
        }
        Request::Verb(Verb::Run { names, args }) => {
            tested(run::cli(&names, args, lab_name, mode).await)
        }
        Request::Verb(Verb::Lab(args)) => ok(lab::cli(args, lab_name, mode).await),
        Request::Verb(Verb::Respond(args)) => ok(respond::cli(args, mode).await),
        Request::Verb(Verb::Serve(args)) => ok(serve::cli(args).await),
        Request::Verb(Verb::Bench(args)) => ok(bench::cli(args, lab_name, mode).await),
        Request::Verb(Verb::Stress(args)) => tested(stress::cli(args, lab_name, mode).await),
    }
}

/// Verbs that load XDP programs or enter namespaces say so before they try.
pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (it loads an XDP program and enters network namespaces): run it with sudo, or through `cargo xtask run -- ...`");
    }
    Ok(())
}

/// Root without the capabilities (e.g. in a container, or after `setpriv --bounding-set=-all`)
/// would get half-way and fail: refuse before touching anything.
pub fn require_capabilities(what: &str) -> Result<()> {
    const NEEDED: [(u32, &str); 3] = [
        (12, "CAP_NET_ADMIN"),
        (13, "CAP_NET_RAW"),
        (21, "CAP_SYS_ADMIN"),
    ];
    let Some(have) = effective_capabilities() else {
        return Ok(());
    };
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(bit, _)| have & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        bail!(
            "{what} needs {} (namespaces, mounts, XDP), which this process lacks although it runs \
             as root: run it outside the restricted environment; nothing was changed",
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_scenario_is_a_subcommand_with_the_registry_text() {
        let cmd = command();
        for s in scenarios::every() {
            let sub = cmd
                .find_subcommand(s.name)
                .unwrap_or_else(|| panic!("no subcommand `{}`", s.name));
            assert_eq!(sub.get_about().map(|a| a.to_string()), Some(s.about.into()));
        }
        cmd.debug_assert();
    }

    #[test]
    fn a_fail_wins_over_an_error_and_an_error_over_a_pass() {
        use pmtu::suite::{Outcome, Verdict};
        let o = |verdict| Outcome {
            kind: "scenario",
            name: "x",
            about: "",
            verdict,
            measured: Default::default(),
            expected: Default::default(),
            reason: None,
            duration_ms: 0,
        };
        let code =
            |vs: &[Verdict]| run::run_exit_code(&vs.iter().map(|v| o(*v)).collect::<Vec<_>>());
        assert_eq!(code(&[]), exit::PASSED);
        assert_eq!(code(&[Verdict::Pass, Verdict::Skip]), exit::PASSED);
        assert_eq!(code(&[Verdict::Pass, Verdict::Error]), exit::COULD_NOT_TEST);
        assert_eq!(code(&[Verdict::Error, Verdict::Fail]), exit::FAILED);
    }

    #[test]
    fn help_lists_the_exit_codes() {
        let help = command().render_long_help().to_string();
        for line in [
            "  0    every scenario passed",
            "  1    a scenario FAILed",
            "  2    usage error",
            "  125  could not test",
            "  130, 143, 129  stopped by SIGINT, SIGTERM, SIGHUP",
        ] {
            assert!(help.contains(line), "no `{line}` in\n{help}");
        }
    }

    #[test]
    fn scenario_subcommands_parse_to_their_scenario() {
        let m = command()
            .try_get_matches_from(["pmtu", "--lab", "x", "pmtu6", "--format", "json"])
            .unwrap();
        let (g, r) = from_matches(&m).unwrap();
        assert_eq!(g.lab, "x");
        assert!(matches!(r, Request::Scenario("pmtu6", _)));
        let m = command()
            .try_get_matches_from(["pmtu", "run", "ping", "pmtu"])
            .unwrap();
        let (_, r) = from_matches(&m).unwrap();
        assert!(
            matches!(r, Request::Verb(Verb::Run { ref names, .. }) if names == &["ping", "pmtu"])
        );
    }
}
