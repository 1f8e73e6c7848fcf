//! The scripted investigator ([`ScriptedModel::investigator`]) as a server of its own, for
//! measuring `opsmesh eval --investigator` without a model:
//!
//! ```text
//! cargo run -p opsmesh-testkit --example investigator-server   # prints its URL
//! SCRIPTED_KEY=scripted opsmesh eval tests/scenarios --investigator \
//!     --llm-url URL --llm-api-key-env SCRIPTED_KEY --investigate-below 1.0
//! ```
//!
//! It accepts the API key `scripted`, serves until stopped (Ctrl-C), and prints the usage it
//! reported every 10 s when it changed.

use std::time::Duration;

use opsmesh_testkit::openai::ScriptedModel;

#[tokio::main]
async fn main() {
    let model = ScriptedModel::investigator("scripted").await;
    println!("{}", model.url());
    let mut reported = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let usage = model.usage();
        if usage.len() != reported {
            reported = usage.len();
            let prompt: u64 = usage.iter().map(|u| u64::from(u.0)).sum();
            let completion: u64 = usage.iter().map(|u| u64::from(u.1)).sum();
            eprintln!("{reported} answers: {prompt} prompt + {completion} completion tokens");
        }
    }
}
