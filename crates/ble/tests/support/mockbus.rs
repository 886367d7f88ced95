//! A private D-Bus with python-dbusmock's `bluez5` template on it, driven
//! from the test: shared by the BlueZ radio's tests and greenlightd's.
//! Included with `#[path]`; each test uses what it needs.
#![allow(dead_code)]

use dbus::arg::{PropMap, RefArg, Variant};
use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
use dbus::blocking::{Proxy, SyncConnection};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const PYTHON_VAR: &str = "GREENLIGHT_DBUSMOCK_PYTHON";
pub const BLUEZ: &str = "org.bluez";
pub const MOCK_IFACE: &str = "org.bluez.Mock";
pub const ADAPTER_IFACE: &str = "org.bluez.Adapter1";
pub const DEVICE_IFACE: &str = "org.bluez.Device1";
pub const ADAPTER: &str = "hci0";
pub const ADAPTER_PATH: &str = "/org/bluez/hci0";
/// 0x4C47 in the Bluetooth base UUID, as BlueZ writes it.
pub const GREENLIGHT_UUID: &str = "00004c47-0000-1000-8000-00805f9b34fb";
/// Apple and Google's exposure notification service, 0xFD6F.
pub const GAEN_UUID: &str = "0000fd6f-0000-1000-8000-00805f9b34fb";
pub const SCAN_WINDOW: Duration = Duration::from_secs(3);
/// The longest wait for the bus, the mock or the radio to do anything.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// Longer than the mock method's own calls (1 s per client on the bus).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The venv's python from the environment; `None` (after saying so) when
/// the test is to be skipped.
pub fn dbusmock_python() -> Option<PathBuf> {
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let missing = match std::env::var_os(PYTHON_VAR) {
        Some(p) if !p.is_empty() => {
            let python = PathBuf::from(p);
            assert!(
                python.exists(),
                "{PYTHON_VAR}={} does not exist: run `bash .ci/bluez.sh`",
                python.display()
            );
            if Command::new("dbus-daemon")
                .arg("--version")
                .output()
                .is_ok()
            {
                return Some(python);
            }
            "dbus-daemon is not installed".to_owned()
        }
        _ => format!("{PYTHON_VAR} is not set"),
    };
    let how = format!(
        "{missing}; `export {PYTHON_VAR}=\"$(bash .ci/bluez.sh)\"` installs dbus-daemon \
         and python-dbusmock and names the python"
    );
    assert!(!in_ci, "the BlueZ test cannot run in CI: {how}");
    eprintln!(
        "\n********\nSKIPPED: the BlueZ radio test against a mocked bluetoothd: {how}\n********\n"
    );
    None
}

pub fn device_path(address: &str) -> String {
    format!("{ADAPTER_PATH}/dev_{}", address.replace(':', "_"))
}

/// The test's own connection to the private bus, driving the mock.
pub struct Mock {
    bus: SyncConnection,
}

impl Mock {
    pub fn object(&self, path: &str) -> Proxy<'_, &SyncConnection> {
        self.bus.with_proxy(BLUEZ, path.to_owned(), CALL_TIMEOUT)
    }

    pub fn add_adapter(&self) {
        let (path,): (String,) = self
            .object("/org/bluez")
            .method_call(MOCK_IFACE, "AddAdapter", (ADAPTER, "greenlight-test"))
            .expect("AddAdapter");
        assert_eq!(path, ADAPTER_PATH);
        let code = include_str!("../bluez_mock/registered_advertisements.py");
        self.object(ADAPTER_PATH)
            .method_call::<(), _, _, _>(
                "org.freedesktop.DBus.Mock",
                "AddMethod",
                (MOCK_IFACE, "RegisteredAdvertisements", "s", "s", code),
            )
            .expect("AddMethod RegisteredAdvertisements");
    }

    pub fn remove_adapter(&self) {
        self.object("/org/bluez")
            .method_call::<(), _, _, _>(MOCK_IFACE, "RemoveAdapter", (ADAPTER,))
            .expect("RemoveAdapter");
    }

    pub fn add_device(&self, address: &str) -> String {
        let (path,): (String,) = self
            .object("/org/bluez")
            .method_call(MOCK_IFACE, "AddDevice", (ADAPTER, address, "phone"))
            .expect("AddDevice");
        assert_eq!(path, device_path(address));
        path
    }

    /// Properties.Set, so that the mock signals the change as BlueZ does.
    /// (The template's AddDevice gives ServiceData a D-Bus type btleplug
    /// reads as empty.)
    pub fn set_rssi(&self, device: &str, rssi: i8) {
        self.object(device)
            .set(DEVICE_IFACE, "RSSI", i16::from(rssi))
            .expect("sets RSSI");
    }

    pub fn set_service_data(&self, device: &str, uuid: &str, data: &[u8]) {
        let mut service_data = PropMap::new();
        service_data.insert(uuid.to_owned(), Variant(Box::new(data.to_vec())));
        self.object(device)
            .set(DEVICE_IFACE, "ServiceData", service_data)
            .expect("sets ServiceData");
    }

    pub fn discovering(&self) -> bool {
        self.object(ADAPTER_PATH)
            .get(ADAPTER_IFACE, "Discovering")
            .expect("reads Discovering")
    }

    pub fn wait_for_discovery(&self, on: bool) {
        let deadline = Instant::now() + PATIENCE;
        while self.discovering() != on {
            assert!(
                Instant::now() < deadline,
                "Discovering is not {on} after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The UUIDs of the last discovery filter set on the adapter.
    pub fn discovery_uuids(&self) -> Vec<String> {
        let filter: PropMap = self
            .object(ADAPTER_PATH)
            .get(ADAPTER_IFACE, "DiscoveryFilter")
            .expect("reads the discovery filter");
        filter
            .get("UUIDs")
            .and_then(|uuids| uuids.0.as_iter())
            .map(|uuids| {
                uuids
                    .filter_map(|u| u.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What bluetoothd would read of each registered advertisement: path →
    /// its `org.bluez.LEAdvertisement1` properties.
    pub fn registered_advertisements(&self) -> BTreeMap<String, serde_json::Value> {
        let (json,): (String,) = self
            .object(ADAPTER_PATH)
            .method_call(
                MOCK_IFACE,
                "RegisteredAdvertisements",
                (self.bus.unique_name().to_string(),),
            )
            .expect("reads the registered advertisements");
        serde_json::from_str(&json).expect("the mock method answers JSON")
    }
}

const DAEMON_LOG: &str = "dbus-daemon.log";
pub const MOCK_LOG: &str = "dbusmock.log";

/// A dbus-daemon listening on a socket in `dir`, and python-dbusmock's
/// bluez5 template on it; both killed when dropped, failed or not.
pub struct PrivateBus {
    daemon: Child,
    mock: Option<Child>,
    dir: TempDir,
}

impl PrivateBus {
    pub fn start(dir: TempDir, python: &Path) -> PrivateBus {
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
                dir.path().join("system_bus").display()
            ),
        )
        .expect("writes the bus configuration");
        let daemon_log = File::create(dir.path().join(DAEMON_LOG)).expect("creates a log");
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(daemon_log)
            .spawn()
            .expect("starts dbus-daemon");
        let stdout = daemon.stdout.take().expect("piped stdout");
        let mut bus = PrivateBus {
            daemon,
            mock: None,
            dir,
        };
        // The daemon prints its address once it listens.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let printed = rx
            .recv_timeout(PATIENCE)
            .expect("dbus-daemon prints its address");
        assert!(
            printed.starts_with("unix:path="),
            "dbus-daemon printed {printed:?}"
        );

        let log = File::create(bus.dir.path().join(MOCK_LOG)).expect("creates a log");
        bus.mock = Some(
            Command::new(python)
                .args(["-m", "dbusmock", "--system", "--template", "bluez5"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("starts python-dbusmock"),
        );
        bus
    }

    /// Connects to the bus and waits for the mock to own `org.bluez`.
    pub fn mock(&self) -> Mock {
        let bus = SyncConnection::new_system().expect("connects to the private bus");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (owned,): (bool,) = bus
                .with_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", PATIENCE)
                .method_call("org.freedesktop.DBus", "NameHasOwner", (BLUEZ,))
                .expect("asks the bus");
            if owned {
                return Mock { bus };
            }
            assert!(
                Instant::now() < deadline,
                "python-dbusmock did not own {BLUEZ} within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        if let Some(mut mock) = self.mock.take() {
            let _ = mock.kill();
            let _ = mock.wait();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        if std::thread::panicking() {
            for name in [DAEMON_LOG, MOCK_LOG] {
                let log = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                eprintln!("---- {name} ----\n{log}");
            }
        }
    }
}
