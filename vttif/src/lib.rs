//! VTTIF: inference of the application's traffic matrix and topology from the frames vnetd
//! forwards (seeds/004 §4). Filled in by issue 4; vnetd's counters feed it.
