//! Load-balancer domain types: resources, enums, validation rules and the provisioning status machine. No I/O.
