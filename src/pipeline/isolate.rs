//! Speed measurements in a child process, so a row's peak memory is its model's alone.
//!
//! Peak RSS is a per-process high-water mark: measured inside a pipeline that also holds the
//! original model, the teacher and the calibration data, it would say nothing about a deployment.
//! [`speed_isolated`] therefore starts the running program again with one environment variable
//! naming the measurement; [`serve_isolated_measurement`], called first thing in `main`, sees it,
//! measures, prints the result as one JSON line and exits. This is the pattern test harnesses use
//! to run one test in a fresh process.

use std::process::Command;

use super::speed::{speed, Deployable, Speed, SpeedOptions};
use super::{PipelineError, Result};

/// The environment variable carrying a measurement request (JSON) to the child.
const REQUEST_VAR: &str = "SHUKU_ISOLATED_SPEED";
/// Prefix of the child's answer line on stdout.
const ANSWER_PREFIX: &str = "shuku-isolated-speed: ";

#[derive(serde::Serialize, serde::Deserialize)]
struct Request {
    target: Deployable,
    options: SpeedOptions,
}

/// When this process was started by [`speed_isolated`], runs the requested measurement, prints it
/// and exits; otherwise returns at once. Call it first thing in `main` of a program that uses
/// [`speed_isolated`].
pub fn serve_isolated_measurement() {
    let Ok(request) = std::env::var(REQUEST_VAR) else {
        return;
    };
    let answer = serde_json::from_str::<Request>(&request)
        .map_err(|e| format!("unreadable request: {e}"))
        .and_then(|r| speed(&r.target, &r.options).map_err(|e| e.to_string()));
    match answer {
        Ok(speed) => {
            let json = serde_json::to_string(&speed).unwrap_or_default();
            println!("{ANSWER_PREFIX}{json}");
            std::process::exit(0);
        }
        Err(reason) => {
            eprintln!("{reason}");
            std::process::exit(1);
        }
    }
}

/// Measures `target` in a fresh copy of this program (see the module docs); the program must call
/// [`serve_isolated_measurement`] at the start of `main`. Inside such a child, or where the
/// program cannot be started again, it measures in this process instead.
pub fn speed_isolated(target: &Deployable, options: &SpeedOptions) -> Result<Speed> {
    let child_error = |reason: String| PipelineError::Child {
        target: target.to_string(),
        reason,
    };
    if std::env::var_os(REQUEST_VAR).is_some() {
        return speed(target, options);
    }
    let Ok(exe) = std::env::current_exe() else {
        return speed(target, options);
    };
    let request = serde_json::to_string(&Request {
        target: target.clone(),
        options: options.clone(),
    })
    .map_err(|e| child_error(e.to_string()))?;
    let mut command = Command::new(&exe);
    command.env(REQUEST_VAR, request);
    if options.threads > 0 {
        // candle's pool reads these when it starts; the engine takes its threads from the options.
        command
            .env("RAYON_NUM_THREADS", options.threads.to_string())
            .env("CANDLE_NUM_THREADS", options.threads.to_string());
    }
    let output = command
        .output()
        .map_err(|e| child_error(format!("cannot start {}: {e}", exe.display())))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let answer = stdout.lines().find_map(|l| l.strip_prefix(ANSWER_PREFIX));
    match (output.status.success(), answer) {
        (true, Some(json)) => serde_json::from_str(json).map_err(|e| child_error(e.to_string())),
        (true, None) => Err(child_error(format!(
            "{} does not call shuku::pipeline::serve_isolated_measurement() at the start of main",
            exe.display()
        ))),
        (false, _) => Err(child_error(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        )),
    }
}
