//! The language front end on arbitrary text: lexing, parsing, checking and printing never
//! panic, and whatever parses cleanly prints to text that parses back to the same tree.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let analysis = lang::analyze(src);
    for d in &analysis.diagnostics {
        let _ = d.render("fuzz", src);
    }
    if lang::parse(src).diagnostics.is_empty() {
        let printed = lang::print(&analysis.description);
        let back = lang::parse(&printed);
        assert!(back.diagnostics.is_empty(), "{printed}");
        assert_eq!(back.description, analysis.description);
    }
});
