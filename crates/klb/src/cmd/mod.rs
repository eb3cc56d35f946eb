//! One module per subcommand; each exposes `Args` (or `Command`) and `run`.

pub mod agent;
pub mod backend;
pub mod bench;
pub mod ca;
pub mod demo;
pub mod load;
pub mod local;
pub mod serve;
