//! The vnet topology description language (seeds/004 fig. 5): lexer, parser, AST,
//! printer, diff and generators. Filled in by issue 3.
