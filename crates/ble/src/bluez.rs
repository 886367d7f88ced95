//! The radio of a Linux phone or laptop: BlueZ over the system D-Bus.
//! btleplug scans, bluer advertises (through `org.bluez.LEAdvertisingManager1`).
//!
//! **Scanning.** A scan asks BlueZ for discovery filtered to service UUID
//! 0x4C47 with duplicate reports on, listens for `window`, then stops. A
//! device counts as heard when BlueZ reports it during the window: a new
//! device object, or a change of its service data or RSSI. Devices BlueZ
//! merely remembers from earlier scans are not heard again. BlueZ gives
//! service data per UUID, not the raw payload, so each sighting's payload is
//! rebuilt from the 0x4C47 service data with the protocol's own encoder
//! (SPEC §5.2). Devices without well-formed 0x4C47 service data are not
//! Greenlight phones and are left out. RSSI is read before discovery stops,
//! because BlueZ invalidates it then.
//!
//! **Advertising.** Each [`Radio::advertise`] drops the previous
//! registration and registers a new broadcast advertisement carrying the
//! UUID list and the 20 service-data bytes of SPEC §5.2, with
//! `Discoverable`, so that BlueZ adds the flags (0x06 on an LE-only or
//! non-discoverable adapter, 0x02 on a discoverable dual-mode one), and
//! nothing else: no name, no TX power, no manufacturer data.
//!
//! **Addresses.** `LEAdvertisement1` has no property for the advertiser's
//! address: D-Bus cannot choose it. The kernel does. For non-connectable
//! (broadcast) advertising it uses a random address: a fresh non-resolvable
//! private address each time an advertising instance is set up when LE
//! privacy is off, or a resolvable private address when it is on
//! (`Privacy = device` in `/etc/bluetooth/main.conf`), which the kernel
//! also rotates on its own timer (15 minutes by default). Registering a new
//! advertisement for each EphID is what makes a new instance, and so a new
//! address, at the moment the EphID changes (SPEC §5.2). Neither the
//! address type nor the rotation timer can be set over D-Bus; `btmon`
//! shows what actually goes on air.

use crate::{Heard, Radio, RadioError};
use bluer::adv::{Advertisement, AdvertisementHandle, Type};
use bluer::{AdapterEvent, AdapterProperty};
use btleplug::api::bleuuid::uuid_from_u16;
use btleplug::api::{Central, CentralEvent, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures_util::StreamExt;
use greenlight_protocol::advertisement::LEGACY_ADV_LEN;
use greenlight_protocol::{
    decode_advertisement, decode_service_data, encode_advertisement, encode_service_data, Rssi,
    Timestamp, SERVICE_UUID16,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Greenlight's service UUID as BlueZ spells it: 0x4C47 in the Bluetooth
/// base UUID, `00004c47-0000-1000-8000-00805f9b34fb`.
const SERVICE_UUID: bluer::Uuid = uuid_from_u16(SERVICE_UUID16);

/// How long [`Radio::advertise`] waits for BlueZ to drop the previous
/// advertisement before it registers the next.
const UNREGISTER_PATIENCE: Duration = Duration::from_secs(1);

/// The radio of one BlueZ adapter.
pub struct BluezRadio {
    adapter_name: String,
    scanner: Adapter,
    advertiser: bluer::Adapter,
    /// bluer's D-Bus connection, which also serves our advertisement
    /// objects to bluetoothd.
    session: bluer::Session,
    advertisement: Mutex<Option<AdvertisementHandle>>,
    /// One scan at a time: BlueZ keeps one discovery session per client.
    scanning: Mutex<()>,
}

impl fmt::Debug for BluezRadio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BluezRadio")
            .field("adapter", &self.adapter_name)
            .finish_non_exhaustive()
    }
}

impl BluezRadio {
    /// Opens the default adapter: `hci0` if there is one, otherwise the
    /// first by name. Must be called inside a tokio runtime, which then
    /// carries the radio's D-Bus connections.
    pub async fn new() -> Result<BluezRadio, RadioError> {
        BluezRadio::open(None).await
    }

    /// Opens the adapter called `name`, such as `hci1`.
    pub async fn with_adapter(name: &str) -> Result<BluezRadio, RadioError> {
        BluezRadio::open(Some(name)).await
    }

    /// The adapter's name, such as `hci0`.
    pub fn adapter_name(&self) -> &str {
        &self.adapter_name
    }

    async fn open(name: Option<&str>) -> Result<BluezRadio, RadioError> {
        // bluer and btleplug spawn their D-Bus connections onto tokio, and
        // would panic without it.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RadioError::Refused {
                operation: "open the Bluetooth adapter",
                reason: "not called inside a tokio runtime".into(),
            });
        }
        let session = bluer::Session::new().await.map_err(cannot_open)?;
        let names = session.adapter_names().await.map_err(cannot_open)?;
        let adapter_name = match name {
            Some(name) if names.iter().any(|n| n == name) => name.to_owned(),
            Some(name) => {
                return Err(RadioError::NoAdapter {
                    name: Some(name.to_owned()),
                })
            }
            None => match session.default_adapter().await {
                Ok(adapter) => adapter.name().to_owned(),
                Err(e) if e.kind == bluer::ErrorKind::NotFound => {
                    return Err(RadioError::NoAdapter { name: None })
                }
                Err(e) => return Err(cannot_open(e)),
            },
        };
        let advertiser = session.adapter(&adapter_name).map_err(cannot_open)?;

        let manager = Manager::new().await.map_err(cannot_open)?;
        let mut scanner = None;
        for adapter in manager.adapters().await.map_err(cannot_open)? {
            // btleplug names an adapter only in its description, "hci0 (usb:…)".
            let info = adapter.adapter_info().await.map_err(cannot_open)?;
            if info.split(' ').next() == Some(adapter_name.as_str()) {
                scanner = Some(adapter);
                break;
            }
        }
        let scanner = scanner.ok_or_else(|| RadioError::NoAdapter {
            name: Some(adapter_name.clone()),
        })?;

        Ok(BluezRadio {
            adapter_name,
            scanner,
            advertiser,
            session,
            advertisement: Mutex::new(None),
            scanning: Mutex::new(()),
        })
    }

    /// `result`, with an error as a [`RadioError`]: [`RadioError::Gone`]
    /// when bluetoothd or the adapter has disappeared, which BlueZ does not
    /// always say in so many words (a call on a removed adapter's object
    /// fails as an unknown method), so ask it.
    async fn checked<T, E: BluezError>(
        &self,
        operation: &'static str,
        result: Result<T, E>,
    ) -> Result<T, RadioError> {
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let gone = error.dbus_name().is_some_and(is_gone)
            || match self.session.adapter_names().await {
                Ok(names) => !names.contains(&self.adapter_name),
                Err(e) => e.dbus_name().is_some_and(is_gone),
            };
        Err(if gone {
            RadioError::Gone
        } else {
            RadioError::Refused {
                operation,
                reason: error.to_string(),
            }
        })
    }

    /// Unregisters an advertisement and waits, for at most
    /// [`UNREGISTER_PATIENCE`], until BlueZ counts one active advertisement
    /// fewer. The old advertisement must be off the air before the next is
    /// registered: while any advertising is on, the kernel defers changing
    /// the random address, and the next EphID would go out under the old one.
    async fn unregister(&self, old: AdvertisementHandle) {
        // bluer unregisters from a task it spawned at registration; dropping
        // the handle tells that task to run. (Dropping the radio does too.)
        let (Ok(before), Ok(events)) = (
            self.advertiser.active_advertising_instances().await,
            self.advertiser.events().await,
        ) else {
            return drop(old);
        };
        drop(old);
        let mut events = std::pin::pin!(events);
        let fewer = async {
            while let Some(event) = events.next().await {
                if let AdapterEvent::PropertyChanged(AdapterProperty::ActiveAdvertisingInstances(
                    now,
                )) = event
                {
                    if now < before {
                        return;
                    }
                }
            }
        };
        // Not an error if it takes longer: the old one goes eventually.
        let _ = tokio::time::timeout(UNREGISTER_PATIENCE, fewer).await;
    }

    /// Collects what is heard until `deadline`: per device, the latest
    /// Greenlight service data and RSSI reported with an event, and when.
    async fn listen(
        &self,
        events: &mut (impl futures_util::Stream<Item = CentralEvent> + Unpin),
        already_known: &HashSet<PeripheralId>,
        deadline: Instant,
    ) -> HashMap<PeripheralId, Report> {
        let mut heard: HashMap<PeripheralId, Report> = HashMap::new();
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
            let now = SystemTime::now();
            match event {
                // On subscribing, btleplug replays "discovered" for every
                // device BlueZ remembers: that is memory, not a sighting.
                CentralEvent::DeviceDiscovered(id)
                | CentralEvent::ServicesAdvertisement { id, .. }
                    if already_known.contains(&id) => {}
                CentralEvent::DeviceDiscovered(id)
                | CentralEvent::ServicesAdvertisement { id, .. }
                | CentralEvent::ManufacturerDataAdvertisement { id, .. } => {
                    heard.entry(id).or_default().at = Some(now);
                }
                CentralEvent::ServiceDataAdvertisement { id, service_data } => {
                    let report = heard.entry(id).or_default();
                    report.at = Some(now);
                    if let Some(data) = service_data.get(&SERVICE_UUID) {
                        report.service_data = Some(data.clone());
                    }
                }
                CentralEvent::RssiUpdate { id, rssi } => {
                    let report = heard.entry(id).or_default();
                    report.at = Some(now);
                    report.rssi = Some(rssi);
                }
                _ => {}
            }
        }
        heard
    }

    /// Turns the devices heard into sightings, completing each report from
    /// BlueZ's device properties (address, and whatever no event carried).
    async fn sightings(
        &self,
        heard: HashMap<PeripheralId, Report>,
    ) -> Result<Vec<Heard>, RadioError> {
        let mut sightings = Vec::new();
        for (id, report) in heard {
            // A device may vanish between its event and this read: unheard.
            let Ok(peripheral) = self.scanner.peripheral(&id).await else {
                continue;
            };
            let Ok(Some(properties)) = peripheral.properties().await else {
                continue;
            };
            let service_data = report
                .service_data
                .or_else(|| properties.service_data.get(&SERVICE_UUID).cloned());
            let Some(Ok(beacon)) = service_data.map(|d| decode_service_data(&d)) else {
                continue; // not a Greenlight phone
            };
            let Some(rssi) = report.rssi.or(properties.rssi).and_then(rssi_dbm) else {
                continue;
            };
            let at = report.at.unwrap_or_else(SystemTime::now);
            sightings.push(Heard {
                payload: encode_advertisement(&beacon).to_vec(),
                rssi,
                address: properties.address.into_inner(),
                at: timestamp(at)?,
            });
        }
        sightings.sort_by_key(|h| h.address);
        Ok(sightings)
    }
}

/// What one device's events said during a scan.
#[derive(Debug, Default)]
struct Report {
    service_data: Option<Vec<u8>>,
    rssi: Option<i16>,
    at: Option<SystemTime>,
}

impl Radio for BluezRadio {
    async fn advertise(&self, payload: &[u8; LEGACY_ADV_LEN]) -> Result<(), RadioError> {
        const ADVERTISE: &str = "advertise";
        let beacon = decode_advertisement(payload).map_err(|e| RadioError::Refused {
            operation: ADVERTISE,
            reason: format!("not a Greenlight advertisement: {e}"),
        })?;
        let advertisement = Advertisement {
            advertisement_type: Type::Broadcast,
            service_uuids: [SERVICE_UUID].into(),
            service_data: BTreeMap::from([(SERVICE_UUID, encode_service_data(&beacon).to_vec())]),
            discoverable: Some(true),
            ..Advertisement::default()
        };
        let mut current = self.advertisement.lock().await;
        if let Some(old) = current.take() {
            self.unregister(old).await;
        }
        let handle = self
            .checked(ADVERTISE, self.advertiser.advertise(advertisement).await)
            .await?;
        *current = Some(handle);
        Ok(())
    }

    async fn stop_advertising(&self) -> Result<(), RadioError> {
        if let Some(old) = self.advertisement.lock().await.take() {
            self.unregister(old).await;
        }
        Ok(())
    }

    async fn scan(&self, window: Duration) -> Result<Vec<Heard>, RadioError> {
        const SCAN: &str = "scan";
        let _one_scan = self.scanning.lock().await;
        let deadline = Instant::now() + window;
        // Subscribe before discovery starts, so that nothing is missed.
        let mut events = self.checked(SCAN, self.scanner.events().await).await?;
        let already_known: HashSet<PeripheralId> = self
            .checked(SCAN, self.scanner.peripherals().await)
            .await?
            .iter()
            .map(|p| p.id())
            .collect();
        let filter = ScanFilter {
            services: vec![SERVICE_UUID],
        };
        self.checked(SCAN, self.scanner.start_scan(filter).await)
            .await?;
        let discovery = Discovery {
            scanner: Some(self.scanner.clone()),
        };
        let heard = self.listen(&mut events, &already_known, deadline).await;
        let sightings = self.sightings(heard).await;
        let stopped = discovery.stop().await;
        let sightings = sightings?;
        self.checked(SCAN, stopped).await?;
        Ok(sightings)
    }
}

/// Stops discovery when a scan ends, also when the scan's future is
/// dropped half way (a daemon shutting down), so that no discovery outlives
/// the scan that started it.
struct Discovery {
    scanner: Option<Adapter>,
}

impl Discovery {
    async fn stop(mut self) -> btleplug::Result<()> {
        match self.scanner.take() {
            Some(scanner) => scanner.stop_scan().await,
            None => Ok(()),
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        if let (Some(scanner), Ok(runtime)) =
            (self.scanner.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                let _ = scanner.stop_scan().await;
            });
        }
    }
}

/// A BlueZ RSSI in dBm, if it is one: the Core Specification's range is
/// −127..=20, and 127 means "not available" (Vol 4 Part E §7.7.65.2).
fn rssi_dbm(rssi: i16) -> Option<Rssi> {
    i8::try_from(rssi)
        .ok()
        .filter(|r| (-127..=20).contains(r))
        .map(Rssi)
}

fn timestamp(at: SystemTime) -> Result<Timestamp, RadioError> {
    at.duration_since(UNIX_EPOCH)
        .map(|d| Timestamp(d.as_secs()))
        .map_err(|_| RadioError::Refused {
            operation: "scan",
            reason: "the system clock is before 1970".into(),
        })
}

/// D-Bus errors that mean bluetoothd is no longer there.
fn is_gone(dbus_error_name: &str) -> bool {
    matches!(
        dbus_error_name,
        "org.freedesktop.DBus.Error.UnknownObject"
            | "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner"
            | "org.freedesktop.DBus.Error.Disconnected"
    )
}

/// The errors of bluer and btleplug.
trait BluezError: fmt::Display {
    /// The D-Bus error name behind this error, if there is one.
    fn dbus_name(&self) -> Option<&str>;
}

impl BluezError for bluer::Error {
    fn dbus_name(&self) -> Option<&str> {
        match &self.kind {
            // bluer's name for org.freedesktop.DBus.Error.UnknownObject.
            bluer::ErrorKind::NotFound => Some("org.freedesktop.DBus.Error.UnknownObject"),
            bluer::ErrorKind::Internal(bluer::InternalErrorKind::DBus(name)) => Some(name),
            _ => None,
        }
    }
}

impl BluezError for btleplug::Error {
    fn dbus_name(&self) -> Option<&str> {
        match self {
            btleplug::Error::Other(e) => match e.downcast_ref::<bluez_async::BluetoothError>() {
                Some(bluez_async::BluetoothError::DbusError(e)) => e.name(),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Opening a radio names what is missing rather than answering
/// [`RadioError::Gone`]: there was nothing yet to be gone.
fn cannot_open(error: impl BluezError) -> RadioError {
    let reason = if error.dbus_name().is_some_and(is_gone) {
        format!("bluetoothd is not on the system D-Bus: {error}")
    } else {
        error.to_string()
    };
    RadioError::Refused {
        operation: "open the Bluetooth adapter",
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_uuid_is_0x4c47_in_the_base_uuid() {
        assert_eq!(
            SERVICE_UUID.to_string(),
            "00004c47-0000-1000-8000-00805f9b34fb"
        );
    }

    #[test]
    fn rssi_outside_the_core_range_is_no_rssi() {
        assert_eq!(rssi_dbm(-61), Some(Rssi(-61)));
        assert_eq!(rssi_dbm(-127), Some(Rssi(-127)));
        assert_eq!(rssi_dbm(127), None, "HCI: not available");
        assert_eq!(rssi_dbm(-300), None);
    }
}
