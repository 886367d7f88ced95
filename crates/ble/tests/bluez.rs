//! The BlueZ radio against a mocked bluetoothd: python-dbusmock's `bluez5`
//! template on a private D-Bus that this test starts, drives and stops.
//!
//! A test binary of its own (`harness = false`): bluer and btleplug talk to
//! BlueZ on the *system* bus, whose address libdbus reads from
//! `DBUS_SYSTEM_BUS_ADDRESS`, and `main` sets it before any thread exists.
//!
//! Needs `dbus-daemon` and a Python with python-dbusmock, named by
//! `GREENLIGHT_DBUSMOCK_PYTHON`: `export GREENLIGHT_DBUSMOCK_PYTHON="$(bash
//! .ci/bluez.sh)"` installs both. Without them the test says loudly that it
//! skipped, or fails when `CI` is set.
//!
//! A mock checks the D-Bus contract only: not the radio, not bluetoothd's
//! own checks of advertisement size and flags, not the address on air.

use dbus::arg::{PropMap, RefArg, Variant};
use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
use dbus::blocking::{Proxy, SyncConnection};
use greenlight_ble::bluez::BluezRadio;
use greenlight_ble::{Heard, Radio, RadioError};
use greenlight_protocol::advertisement::LEGACY_ADV_LEN;
use greenlight_protocol::{
    decode_advertisement, encode_advertisement, encode_service_data, Beacon, DailyKey, DayNumber,
    EpochIndex, Metadata, Rssi, Timestamp,
};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

const PYTHON_VAR: &str = "GREENLIGHT_DBUSMOCK_PYTHON";
const BLUEZ: &str = "org.bluez";
const MOCK_IFACE: &str = "org.bluez.Mock";
const ADAPTER_IFACE: &str = "org.bluez.Adapter1";
const DEVICE_IFACE: &str = "org.bluez.Device1";
const ADAPTER: &str = "hci0";
const ADAPTER_PATH: &str = "/org/bluez/hci0";
/// 0x4C47 in the Bluetooth base UUID, as BlueZ writes it.
const GREENLIGHT_UUID: &str = "00004c47-0000-1000-8000-00805f9b34fb";
/// Apple and Google's exposure notification service, 0xFD6F.
const GAEN_UUID: &str = "0000fd6f-0000-1000-8000-00805f9b34fb";
const SCAN_WINDOW: Duration = Duration::from_secs(3);
/// The longest wait for the bus, the mock or the radio to do anything.
const PATIENCE: Duration = Duration::from_secs(10);
/// Longer than the mock method's own calls (1 s per client on the bus).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

fn main() {
    let Some(python) = dbusmock_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let address = format!("unix:path={}", dir.path().join("system_bus").display());
    // Before any thread starts, as set_var races with other threads reading
    // the environment: bluer and btleplug will find the private bus here.
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &address);

    let started = Instant::now();
    let bus = PrivateBus::start(dir, &python);
    let mock = Arc::new(bus.mock());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let mut passed = 0;
    let mut run = |name: &str, case: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
        let case_started = Instant::now();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), case)
                .await
                .unwrap_or_else(|_| panic!("{name} took more than 60 s"));
        });
        passed += 1;
        println!(
            "test {name} ... ok ({:.1} s)",
            case_started.elapsed().as_secs_f64()
        );
    };
    // In this order: the mock starts with no adapter, and the last case removes it.
    run(
        "no_adapter_is_a_typed_error",
        Box::pin(no_adapter_is_a_typed_error()),
    );
    run(
        "scan_hears_greenlight_phones_and_nothing_else",
        Box::pin(scan_hears_greenlight_phones_and_nothing_else(mock.clone())),
    );
    run(
        "a_later_scan_hears_only_who_advertised_again",
        Box::pin(a_later_scan_hears_only_who_advertised_again(mock.clone())),
    );
    run(
        "advertising_registers_replaces_and_unregisters",
        Box::pin(advertising_registers_replaces_and_unregisters(mock.clone())),
    );
    run(
        "a_removed_adapter_is_gone",
        Box::pin(a_removed_adapter_is_gone(mock.clone())),
    );
    drop(runtime);
    drop(bus);
    println!(
        "bluez against the mock: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    println!("bluez: {passed} passed, 0 failed");
}

/// The venv's python from the environment; `None` (after saying so) when
/// the test is to be skipped.
fn dbusmock_python() -> Option<PathBuf> {
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

// ---------------------------------------------------------------- the cases

async fn no_adapter_is_a_typed_error() {
    // The bluez5 template starts with no adapter at all.
    assert_eq!(
        BluezRadio::new().await.map(|_| ()),
        Err(RadioError::NoAdapter { name: None })
    );
    assert_eq!(
        BluezRadio::with_adapter("hci7").await.map(|_| ()),
        Err(RadioError::NoAdapter {
            name: Some("hci7".into())
        })
    );
    assert_eq!(
        RadioError::NoAdapter {
            name: Some("hci7".into())
        }
        .to_string(),
        "no Bluetooth adapter named hci7"
    );
}

/// Two Greenlight phones and three foreign devices appear once discovery
/// has started, as BlueZ reports them: a new device object, then its RSSI
/// and service data changing.
async fn scan_hears_greenlight_phones_and_nothing_else(mock: Arc<Mock>) {
    blocking(&mock, |m| m.add_adapter()).await;
    let radio = BluezRadio::new().await.expect("opens hci0");
    assert_eq!(radio.adapter_name(), ADAPTER);

    let alice = Phone::new("1E:55:0A:00:00:01", 1, -61);
    let bob = Phone::new("1E:55:0A:00:00:02", 2, -78);
    let before = now();
    let scan = radio.scan(SCAN_WINDOW);
    let air = blocking(&mock, move |m| {
        m.wait_for_discovery(true);
        for phone in [&alice, &bob] {
            let path = m.add_device(phone.address);
            m.set_rssi(&path, phone.rssi);
            m.set_service_data(&path, GREENLIGHT_UUID, &phone.service_data());
        }
        // Exposure notification beacon: 0xFD6F service data, 20 bytes.
        let gaen = m.add_device("2A:00:00:00:00:0E");
        m.set_rssi(&gaen, -50);
        m.set_service_data(&gaen, GAEN_UUID, &[0xEE; 20]);
        // Our UUID, but not our format.
        let odd = m.add_device("2A:00:00:00:00:0F");
        m.set_rssi(&odd, -52);
        m.set_service_data(&odd, GREENLIGHT_UUID, &[1, 2, 3, 4, 5]);
        // A device that only shows its RSSI.
        let mute = m.add_device("2A:00:00:00:00:10");
        m.set_rssi(&mute, -40);
        (alice, bob)
    });
    let (heard, (alice, bob)) = tokio::join!(scan, air);
    let heard = heard.expect("scans");
    let after = now();

    assert_eq!(
        addresses(&heard),
        [alice.address, bob.address],
        "exactly the Greenlight phones"
    );
    for (h, phone) in heard.iter().zip([&alice, &bob]) {
        assert_eq!(h.payload.len(), LEGACY_ADV_LEN);
        assert_eq!(h.payload, encode_advertisement(&phone.beacon).to_vec());
        assert_eq!(
            decode_advertisement(&h.payload).map(|b| b.ephid),
            Ok(phone.beacon.ephid)
        );
        assert_eq!(h.rssi, Rssi(phone.rssi));
        assert!(before <= h.at && h.at <= after, "heard at {:?}", h.at);
    }

    let (filter, discovering) = blocking(&mock, |m| (m.discovery_uuids(), m.discovering())).await;
    assert_eq!(filter, [GREENLIGHT_UUID], "discovery filtered to 0x4C47");
    assert!(!discovering, "the scan stopped discovery");
}

/// BlueZ remembers devices between scans; a scan must not report one
/// that was not heard again.
async fn a_later_scan_hears_only_who_advertised_again(mock: Arc<Mock>) {
    let radio = BluezRadio::new().await.expect("opens hci0");
    let alice = Phone::new("1E:55:0A:00:00:01", 11, -61);
    let scan = radio.scan(SCAN_WINDOW);
    let air = blocking(&mock, move |m| {
        m.wait_for_discovery(true);
        // Alice's next EphID; Bob is out of range.
        let path = device_path(alice.address);
        m.set_rssi(&path, -64);
        m.set_service_data(&path, GREENLIGHT_UUID, &alice.service_data());
        alice
    });
    let (heard, alice) = tokio::join!(scan, air);
    let heard = heard.expect("scans");
    assert_eq!(addresses(&heard), [alice.address]);
    assert_eq!(
        decode_advertisement(&heard[0].payload).map(|b| b.ephid),
        Ok(alice.beacon.ephid)
    );
    assert_eq!(heard[0].rssi, Rssi(-64));
}

async fn advertising_registers_replaces_and_unregisters(mock: Arc<Mock>) {
    let radio = BluezRadio::new().await.expect("opens hci0");
    let first = beacon(21, 40);
    let second = beacon(21, 41);

    radio
        .advertise(&encode_advertisement(&first))
        .await
        .expect("advertises");
    let registered = wait_for_advertisements(&mock, |ads| ads.len() == 1).await;
    let props = registered.values().next().expect("one advertisement");
    // SPEC §5.2: the UUID list and the service data; flags from BlueZ
    // (Discoverable); nothing stable that would link two EphIDs: no name,
    // appearance, TX power or manufacturer data.
    assert_eq!(
        props,
        &serde_json::json!({
            "Type": "broadcast",
            "ServiceUUIDs": [GREENLIGHT_UUID],
            "ServiceData": { GREENLIGHT_UUID: encode_service_data(&first).to_vec() },
            "Discoverable": true,
            "Includes": [],
            "ManufacturerData": {},
            "SolicitUUIDs": [],
            "Data": {},
        })
    );
    let first_path = registered.keys().next().cloned();

    // A new EphID replaces the old advertisement with a new registration,
    // the old one gone before `advertise` returns (so that the kernel is
    // free to change the address).
    radio
        .advertise(&encode_advertisement(&second))
        .await
        .expect("advertises again");
    let registered = blocking(&mock, |m| m.registered_advertisements()).await;
    assert_eq!(registered.len(), 1, "{registered:?}");
    let (second_path, props) = registered.iter().next().expect("one advertisement");
    assert_ne!(Some(second_path), first_path.as_ref(), "a new registration");
    assert_eq!(
        props["ServiceData"],
        serde_json::json!({ GREENLIGHT_UUID: encode_service_data(&second).to_vec() })
    );

    radio.stop_advertising().await.expect("stops");
    let registered = blocking(&mock, |m| m.registered_advertisements()).await;
    assert!(registered.is_empty(), "still registered: {registered:?}");
    radio
        .stop_advertising()
        .await
        .expect("stopping twice is fine");

    // Dropping the radio unregisters too.
    radio
        .advertise(&encode_advertisement(&first))
        .await
        .expect("advertises");
    wait_for_advertisements(&mock, |ads| ads.len() == 1).await;
    drop(radio);
    wait_for_advertisements(&mock, |ads| ads.is_empty()).await;

    // A payload that is not Greenlight's is refused before BlueZ sees it.
    let radio = BluezRadio::new().await.expect("opens hci0");
    assert!(matches!(
        radio.advertise(&[0; LEGACY_ADV_LEN]).await,
        Err(RadioError::Refused { .. })
    ));
}

async fn a_removed_adapter_is_gone(mock: Arc<Mock>) {
    let radio = BluezRadio::new().await.expect("opens hci0");
    blocking(&mock, |m| m.remove_adapter()).await;
    assert_eq!(
        radio.scan(Duration::from_millis(200)).await,
        Err(RadioError::Gone)
    );
    assert_eq!(
        radio.advertise(&encode_advertisement(&beacon(31, 0))).await,
        Err(RadioError::Gone)
    );
    assert_eq!(
        BluezRadio::new().await.map(|_| ()),
        Err(RadioError::NoAdapter { name: None })
    );
}

// ---------------------------------------------------------------- helpers

/// A phone in the mocked air.
struct Phone {
    address: &'static str,
    beacon: Beacon,
    rssi: i8,
}

impl Phone {
    fn new(address: &'static str, key: u8, rssi: i8) -> Phone {
        Phone {
            address,
            beacon: beacon(key, 7),
            rssi,
        }
    }

    fn service_data(&self) -> Vec<u8> {
        encode_service_data(&self.beacon).to_vec()
    }
}

fn beacon(key: u8, epoch: u8) -> Beacon {
    DailyKey::from_bytes([key; 32])
        .ephid_generator(DayNumber(20_415))
        .beacon(
            EpochIndex::new(epoch).expect("below 96"),
            Metadata { tx_power_dbm: -8 },
        )
}

fn addresses(heard: &[Heard]) -> Vec<String> {
    let mut addresses: Vec<String> = heard
        .iter()
        .map(|h| {
            h.address
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .collect();
    addresses.sort();
    addresses
}

fn device_path(address: &str) -> String {
    format!("{ADAPTER_PATH}/dev_{}", address.replace(':', "_"))
}

fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
}

/// Runs blocking D-Bus calls to the mock off the runtime's workers, which
/// must keep serving bluer's and btleplug's connections meanwhile.
async fn blocking<T: Send + 'static>(
    mock: &Arc<Mock>,
    work: impl FnOnce(&Mock) -> T + Send + 'static,
) -> T {
    let mock = mock.clone();
    tokio::task::spawn_blocking(move || work(&mock))
        .await
        .expect("the mock's driver does not panic")
}

async fn wait_for_advertisements(
    mock: &Arc<Mock>,
    done: impl Fn(&BTreeMap<String, serde_json::Value>) -> bool + Send + 'static,
) -> BTreeMap<String, serde_json::Value> {
    blocking(mock, move |m| {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let registered = m.registered_advertisements();
            if done(&registered) {
                return registered;
            }
            assert!(
                Instant::now() < deadline,
                "advertisements still {registered:?} after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
}

/// The test's own connection to the private bus, driving the mock.
struct Mock {
    bus: SyncConnection,
}

impl Mock {
    fn object(&self, path: &str) -> Proxy<'_, &SyncConnection> {
        self.bus.with_proxy(BLUEZ, path.to_owned(), CALL_TIMEOUT)
    }

    fn add_adapter(&self) {
        let (path,): (String,) = self
            .object("/org/bluez")
            .method_call(MOCK_IFACE, "AddAdapter", (ADAPTER, "greenlight-test"))
            .expect("AddAdapter");
        assert_eq!(path, ADAPTER_PATH);
        let code = include_str!("bluez_mock/registered_advertisements.py");
        self.object(ADAPTER_PATH)
            .method_call::<(), _, _, _>(
                "org.freedesktop.DBus.Mock",
                "AddMethod",
                (MOCK_IFACE, "RegisteredAdvertisements", "s", "s", code),
            )
            .expect("AddMethod RegisteredAdvertisements");
    }

    fn remove_adapter(&self) {
        self.object("/org/bluez")
            .method_call::<(), _, _, _>(MOCK_IFACE, "RemoveAdapter", (ADAPTER,))
            .expect("RemoveAdapter");
    }

    fn add_device(&self, address: &str) -> String {
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
    fn set_rssi(&self, device: &str, rssi: i8) {
        self.object(device)
            .set(DEVICE_IFACE, "RSSI", i16::from(rssi))
            .expect("sets RSSI");
    }

    fn set_service_data(&self, device: &str, uuid: &str, data: &[u8]) {
        let mut service_data = PropMap::new();
        service_data.insert(uuid.to_owned(), Variant(Box::new(data.to_vec())));
        self.object(device)
            .set(DEVICE_IFACE, "ServiceData", service_data)
            .expect("sets ServiceData");
    }

    fn discovering(&self) -> bool {
        self.object(ADAPTER_PATH)
            .get(ADAPTER_IFACE, "Discovering")
            .expect("reads Discovering")
    }

    fn wait_for_discovery(&self, on: bool) {
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
    fn discovery_uuids(&self) -> Vec<String> {
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
    fn registered_advertisements(&self) -> BTreeMap<String, serde_json::Value> {
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
const MOCK_LOG: &str = "dbusmock.log";

/// A dbus-daemon listening on a socket in `dir`, and python-dbusmock's
/// bluez5 template on it; both killed when dropped, failed or not.
struct PrivateBus {
    daemon: Child,
    mock: Option<Child>,
    dir: TempDir,
}

impl PrivateBus {
    fn start(dir: TempDir, python: &Path) -> PrivateBus {
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
    fn mock(&self) -> Mock {
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
