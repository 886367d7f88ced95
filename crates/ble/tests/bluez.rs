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

#[path = "support/mockbus.rs"]
mod mockbus;

use greenlight_ble::bluez::BluezRadio;
use greenlight_ble::{Heard, Radio, RadioError};
use greenlight_protocol::advertisement::LEGACY_ADV_LEN;
use greenlight_protocol::{
    decode_advertisement, encode_advertisement, encode_service_data, Beacon, DailyKey, DayNumber,
    EpochIndex, Metadata, Rssi, Timestamp,
};
use mockbus::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
