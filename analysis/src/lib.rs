//! What tracebench derives from a trace, whatever captured it: each
//! thread's states over time ([`states`]), which thread served which
//! request and how long it queued ([`attribution`]), and how each futex
//! word was used ([`futexstat`]). Every analysis is an
//! [`EventSink`](tracebench_trace::EventSink), so it runs live beside the
//! capture or over a recorded file alike.

pub mod attribution;
pub mod futexstat;
pub mod roles;
pub mod states;
