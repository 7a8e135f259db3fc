"""Signal-level tools below `ecgjax.data`: numpy over arrays in mV at an explicit rate, no stores,
no models, no files.

limits      the ±60 mV rule (samples beyond it are artefact)
windows     one windowing implementation: window grids over a recording or over a batch of records,
            cutting them out (zero past a record's end), random crops
heart_rate  QRS detection, heart rate of windows from beat positions, 001's heart-rate classes
"""
