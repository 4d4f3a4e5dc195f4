//! `shardgate-loadtest`: a load generator for the gateway, the mock and nginx alike.
//!
//! Owns: scenarios as data ([`scenario`]), open-loop schedules measured from each request's
//! intended send time ([`schedule`]), the HTTP/1.1 and HTTP/2 clients ([`client`]), running
//! steps on generator threads ([`run`]), HdrHistogram statistics ([`stats`]), CPU/RSS of the
//! processes under test ([`procstat`]) and reports: summary, side-by-side comparison, CSV and
//! SVG ([`report`]); median ratios of repeated A/B runs with the CPU guard ([`ratios`]);
//! connection exhaustion and slowloris with a normal client alongside ([`exhaust`]).
//! Does not: start the processes under test (`scripts/loadtest.sh` does).

pub mod client;
pub mod exhaust;
pub mod procstat;
pub mod ratios;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod stats;
