mod agent;
mod common;
mod doctor_and_engine;
mod hardening;
mod lifecycle;
mod run;
mod sandbox;
