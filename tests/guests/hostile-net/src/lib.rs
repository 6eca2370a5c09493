//! A logic module that opens a TCP connection to 127.0.0.1 for every
//! record. std::net makes it import `wasi:sockets`, which correlator grants
//! no instance yet: the host must refuse it at load.

use correlator_sdk::{Descriptor, Module, Record, export_module};

struct HostileNet;

impl Module for HostileNet {
    fn describe() -> Descriptor {
        Descriptor::new("hostile-net", "connects to 127.0.0.1, for tests")
    }

    fn init() -> Result<Self, String> {
        Ok(HostileNet)
    }

    fn process(&mut self, _record: &Record<'_>) {
        let _ = std::net::TcpStream::connect("127.0.0.1:9");
    }
}

export_module!(HostileNet);
