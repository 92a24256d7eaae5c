using System.Text.Json;
using Broker.Storage.Errors;
using Broker.Storage.Files;

namespace Broker.Storage.Topics;

/// <summary>
/// Where a start-up scan rebuilds an in-memory index from the log (the delivery schedule's, the deduplication
/// window's): a small JSON file in the topic's folder, written before the index's first entry is appended (so the scan
/// starts below every entry) and moved up, at most every 10 s, as the index's oldest entry moves up. Its absence means
/// the topic never used the index: no scan. Written to a temporary file, flushed, renamed into place and the folder
/// flushed: a crash leaves the old address or the new one, never a torn file.
/// </summary>
internal sealed class ScanStart
{
    private static readonly TimeSpan MoveInterval = TimeSpan.FromSeconds(10);

    private readonly string _path;
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();
    private long? _address;
    private long _lastMove;

    private ScanStart(string directory, string fileName, TimeProvider time, long? address)
    {
        _path = Path.Combine(directory, fileName);
        _time = time;
        _address = address;
        _lastMove = time.GetTimestamp();
    }

    /// <summary>Reads the topic's file <paramref name="fileName"/>, if there is one.</summary>
    public static ScanStart Open(string topicDirectory, string fileName, TimeProvider time)
    {
        string path = Path.Combine(topicDirectory, fileName);
        long? address = null;
        if (File.Exists(path))
        {
            address = JsonSerializer.Deserialize<ScanStartFile>(File.ReadAllBytes(path))?.ScanFromAddress
                ?? throw new BrokerException(BrokerErrorCode.StorageFailure, $"{path} is empty or not a scan-start file");
        }
        return new ScanStart(topicDirectory, fileName, time, address);
    }

    /// <summary>Where the scan at the next start begins; null when the index was never used.</summary>
    public long? Address
    {
        get
        {
            lock (_gate)
                return _address;
        }
    }

    /// <summary>Before the index's first entry is appended: the file is written durably with the log's tail.</summary>
    public void EnsureWritten(long tail)
    {
        lock (_gate)
        {
            if (_address is null)
                WriteLocked(tail);
        }
    }

    /// <summary>Moves the start up to <paramref name="address"/> now (a purge dropped everything below it).</summary>
    public void MoveUp(long address)
    {
        lock (_gate)
        {
            if (_address < address)
                WriteLocked(address);
        }
    }

    /// <summary>At most every 10 s: moves the start up to <paramref name="lowest"/>'s answer, the index's oldest entry.</summary>
    public void MoveUpWhenDue(Func<long> lowest)
    {
        if (_address is null || _time.GetElapsedTime(Volatile.Read(ref _lastMove)) < MoveInterval)
            return;
        long address = lowest();
        lock (_gate)
        {
            _lastMove = _time.GetTimestamp();
            if (_address < address)
                WriteLocked(address);
        }
    }

    private void WriteLocked(long address)
    {
        DurableFile.Replace(_path, file => JsonSerializer.Serialize(file, new ScanStartFile(address)));
        _address = address;
    }

    private sealed record ScanStartFile(long ScanFromAddress);
}
