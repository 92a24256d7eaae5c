using System.Buffers;
using System.Runtime.InteropServices;

namespace Broker.Storage.Logs;

/// <summary>
/// The memory of one batch of entries read for delivery: entries are copied side by side into pooled chunks instead of
/// an array each, and the chunks go back to the pool when the holder calls <see cref="Release"/>, once nothing reads
/// the entries any more (for a consumer: its delivery frames are written to the stream).
/// <para>Why: reading each entry into its own array was the broker's largest allocation (about a third of its bytes
/// per message); pooled, a delivered message's memory is reused by the next fetches (when the pool runs dry, as at
/// saturation, a fetch allocates its chunks). A holder that never releases only leaves its chunks to the garbage
/// collector, as plain arrays would be.</para>
/// <para>Not thread-safe while entries are copied in (one reader fills a lease); <see cref="Release"/> may run on any
/// thread, once. Nothing may read an entry of a released lease: its memory is another batch's by then.</para>
/// </summary>
internal sealed class ReadBufferLease
{
    /// <summary>Size of one pooled chunk; an entry larger than this gets an array of its own.</summary>
    internal const int ChunkBytes = 16 << 10;

    /// <summary>
    /// Chunks kept for reuse across all topics (8 MiB at most); more are left to the garbage collector. A consumer's
    /// fetch of a thousand 1 KiB messages fills 70 chunks, and several frames are in flight per stream.
    /// </summary>
    private const int MaxPooledChunks = 512;

    private static readonly ArrayPool<byte> Chunks = ArrayPool<byte>.Create(ChunkBytes, MaxPooledChunks);

    private List<byte[]>? _chunks;
    private byte[]? _current;
    private int _used;

    /// <summary>Copies <paramref name="entry"/> into the lease's memory and returns that copy.</summary>
    public Memory<byte> Copy(ReadOnlySpan<byte> entry)
    {
        if (entry.Length > ChunkBytes)
            return entry.ToArray();
        if (_current is null || ChunkBytes - _used < entry.Length)
        {
            _current = Chunks.Rent(ChunkBytes);
            (_chunks ??= []).Add(_current);
            _used = 0;
        }
        var copy = _current.AsMemory(_used, entry.Length);
        entry.CopyTo(copy.Span);
        _used += entry.Length;
        return copy;
    }

    /// <summary>
    /// Takes back the space of <paramref name="copy"/> if it is the last entry copied in (an entry the reader skips
    /// instead of delivering), so a fetch that passes over many acknowledged entries holds only what it delivers.
    /// </summary>
    public void UndoLastCopy(ReadOnlyMemory<byte> copy)
    {
        if (_current is not null && MemoryMarshal.TryGetArray(copy, out var segment)
            && ReferenceEquals(segment.Array, _current) && segment.Offset + segment.Count == _used)
            _used = segment.Offset;
    }

    /// <summary>Gives the chunks back to the pool. Only the first call does anything.</summary>
    public void Release()
    {
        var chunks = Interlocked.Exchange(ref _chunks, null);
        _current = null;
        if (chunks is null)
            return;
        foreach (byte[] chunk in chunks)
            Chunks.Return(chunk);
    }
}
