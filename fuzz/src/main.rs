//! One AFL++ binary for every target of `shardgate::fuzz_logic`: the target is named by
//! `SHARDGATE_FUZZ_TARGET`. A broken promise (a `Violation`) aborts like a panic, so AFL++
//! records it as a crash. Run through `scripts/fuzz.sh`.

use shardgate::fuzz_logic::{TARGETS, target};

fn main() {
    let name = std::env::var("SHARDGATE_FUZZ_TARGET").unwrap_or_default();
    let Some(t) = target(&name) else {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        eprintln!("SHARDGATE_FUZZ_TARGET must be one of: {}", names.join(" "));
        std::process::exit(2);
    };
    let run = t.run;
    afl::fuzz!(|data: &[u8]| {
        if let Err(v) = run(data) {
            panic!("{v}");
        }
    });
}
