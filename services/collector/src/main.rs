fn main() -> std::process::ExitCode {
    opsmesh_runtime::launcher::service_main(&opsmesh_collector::SERVICE)
}
