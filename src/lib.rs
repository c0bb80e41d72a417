//! ak-outpost (skeleton, filled in below).
