using FASTER.core;

namespace Broker.Storage.Logs;

/// <summary>
/// Reads durable entries in order, joining fragmented entries (see <see cref="EntryFragments"/>) back into one.
/// Not thread-safe: one reader serves one consumer of the log at a time.
/// </summary>
internal sealed class LogReader(FasterLogScanIterator iterator) : IDisposable
{
    private byte[]? _joining;
    private int _joined;
    private long _headAddress;

    /// <summary>Address the next entry will be read from.</summary>
    public long NextAddress => iterator.NextAddress;

    /// <summary>
    /// The next whole entry, its address (a fragmented entry's is its head's) and the address after it; false when
    /// no further entry is durable yet (or the end of the scan is reached).
    /// </summary>
    public bool TryGetNext(out byte[] entry, out int length, out long address, out long nextAddress)
    {
        while (iterator.GetNext(out entry, out length, out address, out nextAddress))
        {
            var span = entry.AsSpan(0, length);
            if (_joining is null)
            {
                if (EntryFragments.IsContinuation(span))
                    throw new InvalidDataException($"log entry at address {address} continues an entry whose head is missing");
                if (!EntryFragments.IsHead(span))
                    return true;
                _joining = new byte[EntryFragments.TotalLength(span)];
                _joined = 0;
                _headAddress = address;
                Append(span[EntryFragments.HeadOverhead..], address);
            }
            else
            {
                if (!EntryFragments.IsContinuation(span))
                    throw new InvalidDataException($"log entry at address {address} interrupts the fragmented entry at {_headAddress}");
                Append(span[EntryFragments.ContinuationOverhead..], address);
            }
            if (_joined == _joining.Length)
            {
                entry = _joining;
                length = _joining.Length;
                address = _headAddress;
                _joining = null;
                return true;
            }
        }
        return false;
    }

    private void Append(ReadOnlySpan<byte> part, long address)
    {
        if (part.Length > _joining!.Length - _joined)
            throw new InvalidDataException($"log entry at address {address} overruns the fragmented entry at {_headAddress}");
        part.CopyTo(_joining.AsSpan(_joined));
        _joined += part.Length;
    }

    /// <summary>Completes when more entries may be available; false once the log has closed.</summary>
    public ValueTask<bool> WaitAsync(CancellationToken cancellationToken) => iterator.WaitAsync(cancellationToken);

    public void Dispose() => iterator.Dispose();
}
