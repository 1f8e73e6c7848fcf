fn main() -> std::process::ExitCode {
    opsmesh_runtime::launcher::service_main(&opsmesh_alert_receiver::SERVICE)
}
