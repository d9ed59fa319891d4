//! One module per `berth` verb.

pub mod doctor;
pub mod gc;
pub mod image;
pub mod run;
