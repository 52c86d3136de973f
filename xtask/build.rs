// Same commit stamp as the root package (args.rs uses it in --version).
include!("../build.rs");
