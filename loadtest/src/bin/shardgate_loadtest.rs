//! `shardgate-loadtest`: the load generator (built in the next issue; this placeholder says so).

fn main() {
    eprintln!("shardgate-loadtest: not built yet; use `oha` or `wrk` for now (see README).");
    std::process::exit(2);
}
