// One import for applications that embed Strata: the broker (topics, produce, fetch, groups,
// transactions), the record types of the log engine and StrataStreams, plus the client API of
// this module (`Strata`, typed produce/consume, group consumers, JSON helpers). The lower
// modules stay importable on their own.
@_exported import StrataBroker
@_exported import StrataLog
@_exported import StrataStreams
