//! greenlightd on the BlueZ radio, as a process, against a mocked
//! bluetoothd on a private D-Bus: it registers its advertisement with
//! BlueZ, scans, stores what it hears, answers the CLI, and unregisters on
//! SIGTERM. (The radio itself is tested in greenlight-ble's `bluez` test;
//! this checks that the daemon drives it.)
//!
//! A test binary of its own (`harness = false`), so that
//! `DBUS_SYSTEM_BUS_ADDRESS` is set before any thread exists. Needs what
//! greenlight-ble's `bluez` test needs; skips loudly without it, fails in CI.

#[path = "../../ble/tests/support/mockbus.rs"]
mod mockbus;

use greenlight_protocol::{
    decode_service_data, encode_service_data, DailyKey, DayNumber, Metadata,
};
use mockbus::{dbusmock_python, PrivateBus, GREENLIGHT_UUID};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn greenlight(socket: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_greenlight"))
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("greenlight runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} did not happen in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let Some(python) = dbusmock_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let work = tempfile::tempdir().expect("a temporary directory");
    let address = format!("unix:path={}", dir.path().join("system_bus").display());
    // Before any thread starts: the mock's driver below connects with it;
    // greenlightd inherits it.
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &address);
    let started = Instant::now();
    let bus = PrivateBus::start(dir, &python);
    let mock = Arc::new(bus.mock());
    mock.add_adapter();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let server = runtime.block_on(greenlight_e2e::TestServer::start());
    let socket = work.path().join("run/greenlight.sock");
    let config = work.path().join("greenlightd.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"DEMO\"\nradio = \"bluez\"\ndata_dir = \"{}\"\nsocket = \"{}\"\n\
             scan_window_secs = 3\nscan_every_secs = 60\n\n[[servers]]\nurl = \"{}\"\n\
             region = \"DEMO\"\npublic_key = \"{}\"\n",
            work.path().join("phone").display(),
            socket.display(),
            server.url,
            server.public_key
        ),
    )
    .expect("writes the configuration");
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_greenlightd"))
            .arg("--config")
            .arg(&config)
            .env("GREENLIGHT_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("greenlightd starts"),
    );

    // Its first step advertises, then scans: a Greenlight phone appears.
    let other = DailyKey::from_bytes([42; 32])
        .ephid_generator(DayNumber(20_415))
        .beacon(
            greenlight_protocol::EpochIndex::new(3).expect("below 96"),
            Metadata { tx_power_dbm: -8 },
        );
    let registered = until("an advertisement registered with BlueZ", || {
        let ads = mock.registered_advertisements();
        (ads.len() == 1).then_some(ads)
    });
    let props = registered.values().next().expect("one advertisement");
    assert_eq!(props["Type"], "broadcast");
    let data: Vec<u8> = serde_json::from_value(props["ServiceData"][GREENLIGHT_UUID].clone())
        .expect("service data bytes");
    let own = decode_service_data(&data).expect("a Greenlight advertisement");
    mock.wait_for_discovery(true);
    let device = mock.add_device("1E:55:0A:00:00:07");
    mock.set_rssi(&device, -64);
    mock.set_service_data(&device, GREENLIGHT_UUID, &encode_service_data(&other));

    let export = until("the sighting stored", || {
        let e = greenlight(&socket, &["export-my-data"]);
        (!e["sightings"].as_array()?.is_empty()).then_some(e)
    });
    let sightings = export["sightings"].as_array().expect("sightings");
    assert_eq!(sightings.len(), 1, "{export}");
    assert_eq!(sightings[0]["ephid"], hex::encode(other.ephid.0));
    assert_eq!(sightings[0]["rssi"], -64);
    assert_eq!(export["daily_keys"].as_array().map(Vec::len), Some(1));
    // What it broadcasts comes from its own key of today.
    let key = export["daily_keys"][0][1].as_str().expect("key hex");
    let day = DayNumber(export["daily_keys"][0][0].as_u64().expect("day") as u32);
    let bytes: [u8; 32] = hex::decode(key).expect("hex").try_into().expect("32 bytes");
    let ephids = DailyKey::from_bytes(bytes)
        .ephid_generator(day)
        .all_ephids();
    assert!(ephids.contains(&own.ephid), "it broadcasts its own EphIDs");

    // SIGTERM: the advertisement is withdrawn from BlueZ, the process exits cleanly.
    let killed = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = daemon.0.wait().expect("exits");
    assert!(status.success(), "{status:?}");
    let left = mock.registered_advertisements();
    assert!(left.is_empty(), "still registered: {left:?}");
    drop(daemon);
    runtime.block_on(server.stop());
    drop(mock);
    drop(bus);
    println!(
        "greenlightd on BlueZ against the mock: {:.1} s; 1 passed, 0 failed",
        started.elapsed().as_secs_f64()
    );
}
