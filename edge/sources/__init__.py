"""Reading sources: a serial port (pyserial + the hardware decoders) and an MQTT subscription."""
