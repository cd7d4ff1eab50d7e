"""Links to other hubs and the centre: MQTT and the Meshtastic mesh (``hubd.radio``)."""
