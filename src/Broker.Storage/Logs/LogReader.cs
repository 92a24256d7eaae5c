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
            if (TryJoin(entry.AsSpan(0, length), address, out var whole))
            {
                if (whole is not null)
                {
                    entry = whole;
                    length = whole.Length;
                    address = _headAddress;
                }
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// Like <see cref="TryGetNext(out byte[], out int, out long, out long)"/>, but copies a whole entry straight from
    /// the log's page into <paramref name="buffers"/> (no array of its own); a joined fragmented entry keeps its own array.
    /// </summary>
    public unsafe bool TryGetNext(ReadBufferLease buffers, out ReadOnlyMemory<byte> entry, out long address, out long nextAddress)
    {
        while (iterator.UnsafeGetNext(out byte* raw, out int length, out address, out nextAddress))
        {
            bool complete;
            byte[]? whole;
            try
            {
                var span = new ReadOnlySpan<byte>(raw, length);
                complete = TryJoin(span, address, out whole);
                entry = complete && whole is null ? buffers.Copy(span) : default;
            }
            finally
            {
                // The page may be evicted once the epoch is released: nothing may read the raw span after this.
                iterator.UnsafeRelease();
            }
            if (complete)
            {
                if (whole is not null)
                {
                    entry = whole;
                    address = _headAddress;
                }
                return true;
            }
        }
        entry = default;
        return false;
    }

    /// <summary>
    /// Takes one log entry: true with <paramref name="whole"/> null for an ordinary entry (return it as it is), true
    /// with the joined entry when this fragment completes one, false while fragments are still being joined.
    /// </summary>
    private bool TryJoin(ReadOnlySpan<byte> span, long address, out byte[]? whole)
    {
        whole = null;
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
        if (_joined < _joining.Length)
            return false;
        whole = _joining;
        _joining = null;
        return true;
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
