mod agent;
mod common;
mod doctor_and_engine;
mod egress;
mod hardening;
mod lifecycle;
mod run;
mod sandbox;
