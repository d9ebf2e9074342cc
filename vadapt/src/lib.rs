//! VADAPT: the adaptation problem (VM placement, overlay links, routes, reservations) and
//! its algorithms (seeds/004 §5–8). Filled in by issue 5.
