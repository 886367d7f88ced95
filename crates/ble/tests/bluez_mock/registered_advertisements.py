# Body of the mock method org.bluez.Mock.RegisteredAdvertisements(s caller) -> s,
# added to an adapter of python-dbusmock's bluez5 template by tests/bluez.rs.
# dbusmock runs it with `self` (the adapter object), `args` and `dbus` in
# scope, and returns `ret`: a JSON object, advertisement path -> its
# org.bluez.LEAdvertisement1 properties (byte arrays as lists of numbers).
#
# bluetoothd reads a registered advertisement's properties from the client
# that registered it. The template keeps only the paths, not who sent them,
# so ask every client on the bus but two: the mock itself, and the caller
# (args[0]), which is blocked waiting for this very answer.
import json

#
# dbusmock runs this with exec() and separate locals, so nested scopes
# (lambdas, comprehensions) would not see its variables: plain loops only.
bus = self.connection
skip = {bus.get_unique_name(), args[0]}
# A client that does not export the path may not answer at all, only time
# out: try first the one that answered last time.
if not hasattr(self, "advertiser"):
    self.advertiser = None
names = []
for name in bus.list_names():
    if name.startswith(":") and name not in skip:
        if name == self.advertiser:
            names.insert(0, name)
        else:
            names.append(name)
result = {}
for path in self.advertisements:
    for name in names:
        try:
            props = bus.call_blocking(
                name, path, "org.freedesktop.DBus.Properties", "GetAll", "s",
                ["org.bluez.LEAdvertisement1"], timeout=1.0,
            )
        except dbus.exceptions.DBusException:
            continue
        # dbus.Boolean is an int to json; the rest maps as it is.
        plain = {}
        for key, value in props.items():
            plain[str(key)] = bool(value) if isinstance(value, dbus.Boolean) else value
        result[str(path)] = plain
        self.advertiser = name
        break
    else:
        raise dbus.exceptions.DBusException(
            "no client on the bus serves " + str(path), name="org.bluez.Error.Failed"
        )
ret = json.dumps(result)
