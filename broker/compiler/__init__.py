"""The config compiler: manifest text -> validated manifest -> resolved environment -> entries for renderers.

Pure: no database, no settings, no clock. The broker's compile service supplies the stored values through a
lookup function; everything else happens here.
"""
