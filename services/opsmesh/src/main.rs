fn main() -> std::process::ExitCode {
    opsmesh::main()
}
