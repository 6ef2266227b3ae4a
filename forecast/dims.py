"""The names of dimensions and coordinates, defined once.

The training store is ``data(time, channel, latitude, longitude)``; a forecast
is ``(time, lead_time, member, latitude, longitude)`` with the coordinate
``valid_time(time, lead_time)``, where ``time`` is the initialisation (see
docs/formats.md). Code that names a dimension imports it from here.
"""

from __future__ import annotations

TIME = "time"
CHANNEL = "channel"
LEAD_TIME = "lead_time"
MEMBER = "member"
LATITUDE = "latitude"
LONGITUDE = "longitude"
VALID_TIME = "valid_time"

#: The horizontal dimensions, in array order.
SPACE = (LATITUDE, LONGITUDE)
#: Dimensions of the training store's ``data``.
STORE = (TIME, CHANNEL, *SPACE)
#: Dimensions of each channel of a forecast; ``time`` is the initialisation.
FORECAST = (TIME, LEAD_TIME, MEMBER, *SPACE)
