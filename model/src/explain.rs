//! Placeholder: explain a QEMU log (being written).
