using System.Buffers;
using Broker.Protocol.V1;
using Google.Protobuf;

namespace Broker.Client;

/// <summary>
/// One topic's batch in a <see cref="BrokerProducer"/>: its messages encoded, as they are sent, into the body of a
/// PublishRequest (the topic and the messages; the stream adds its request id when it writes the batch) in a buffer
/// rented from the shared pool, and each message's durable task.
/// <para>Why encoded at send: a producer must keep every message until the broker confirms it (a retry sends it
/// again). Kept as objects (a payload copy, a protobuf message and a pending entry each), thousands of messages in
/// flight survive every garbage collection and are copied by it; the SDK producer's runner then paused for 1.8 s per
/// million messages against 0.26 s for raw streams (docs/perf.md, W7). One buffer per batch is copied by nobody.</para>
/// <para>Filled under the producer's lock; once sealed, only its publish touches it, and returns the buffer when it is done.</para>
/// </summary>
internal sealed class ProducerBatch
{
    // PublishRequest's field numbers (proto/broker/v1/broker.proto), each with wire type 2 (length-delimited).
    private const byte TopicTag = (1 << 3) | 2;
    private const byte MessagesTag = (2 << 3) | 2;

    private readonly List<TaskCompletionSource<PublishedMessage>> _durable = [];
    private readonly int _headerBytes;
    private byte[] _buffer;
    private int _length;

    /// <param name="topic">The topic every message of the batch goes to.</param>
    /// <param name="expectedBytes">The buffer to rent first (the size of this topic's previous batch), so it seldom grows.</param>
    /// <param name="lingerEnds">When the producer sends it even if not full (a <see cref="System.Diagnostics.Stopwatch"/> timestamp).</param>
    public ProducerBatch(string topic, int expectedBytes, long lingerEnds)
    {
        Topic = topic;
        LingerEnds = lingerEnds;
        int topicBytes = System.Text.Encoding.UTF8.GetByteCount(topic);
        _buffer = ArrayPool<byte>.Shared.Rent(Math.Max(expectedBytes, MaxFieldHeaderBytes + topicBytes + 1024));
        _length = WriteFieldHeader(_buffer, TopicTag, topicBytes);
        _length += System.Text.Encoding.UTF8.GetBytes(topic, _buffer.AsSpan(_length));
        _headerBytes = _length;
    }

    public string Topic { get; }

    public long LingerEnds { get; }

    public int Count => _durable.Count;

    /// <summary>The encoded messages' bytes (without the topic).</summary>
    public int MessageBytes => _length - _headerBytes;

    /// <summary>The whole encoded body, valid until <see cref="ReturnBuffer"/>.</summary>
    public ReadOnlyMemory<byte> Body => _buffer.AsMemory(0, _length);

    /// <summary>The bytes <paramref name="messageSize"/> (a message's <c>CalculateSize()</c>) takes in a batch.</summary>
    public static int EncodedSize(int messageSize) => 1 + CodedOutputStream.ComputeLengthSize(messageSize) + messageSize;

    /// <summary>Whether a message of <paramref name="encodedSize"/> bytes may join; a lone message always may (an oversized one goes alone).</summary>
    public bool Fits(int encodedSize, int maxMessages, int maxBytes) =>
        Count == 0 || (Count < maxMessages && MessageBytes + encodedSize <= maxBytes);

    public bool IsFull(int maxMessages, int maxBytes) => Count >= maxMessages || MessageBytes >= maxBytes;

    /// <summary>Encodes <paramref name="message"/> into the batch; the task completes once it is durable.</summary>
    public Task<PublishedMessage> Append(in OutgoingBytes message)
    {
        int encoded = EncodedSize(message.Size);
        EnsureRoom(encoded);
        var span = _buffer.AsSpan(_length, encoded);
        int header = WriteFieldHeader(span, MessagesTag, message.Size);
        message.WriteTo(span.Slice(header, message.Size));
        _length += encoded;
        // Completed by the batch's publish, apart from the stream's read loop and after the batch gave back its room and
        // slot: continuations may run inline.
        var durable = new TaskCompletionSource<PublishedMessage>();
        _durable.Add(durable);
        return durable.Task;
    }

    /// <summary>Every message is durable: completes each task with its offset.</summary>
    public void Complete(PublishResult result)
    {
        for (int i = 0; i < _durable.Count; i++)
            _durable[i].TrySetResult(new PublishedMessage(Topic, result.OffsetOf(i), result.IsDuplicate(i)));
    }

    /// <summary>Each message's failure with <paramref name="error"/>, its payload copied out of the buffer (so before <see cref="ReturnBuffer"/>).</summary>
    public IReadOnlyList<PublishFailure> Failures(Exception error)
    {
        var request = PublishRequest.Parser.ParseFrom(Body.Span);
        return [.. request.Messages.Select(m => new PublishFailure(Topic, m.Payload.Memory, error))];
    }

    /// <summary>The batch failed: each message's task fails with <paramref name="error"/>.</summary>
    public void Fail(Exception error)
    {
        foreach (var durable in _durable)
            durable.TrySetException(error);
    }

    /// <summary>Gives the buffer back to the pool: only once no write of <see cref="Body"/> can happen any more.</summary>
    public void ReturnBuffer()
    {
        var buffer = _buffer;
        _buffer = [];
        _length = 0;
        if (buffer.Length > 0)
            ArrayPool<byte>.Shared.Return(buffer);
    }

    private void EnsureRoom(int bytes)
    {
        if (_length + bytes <= _buffer.Length)
            return;
        var larger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, _length + bytes));
        _buffer.AsSpan(0, _length).CopyTo(larger);
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = larger;
    }

    /// <summary>A tag and a varint length, at most this long: what precedes every length-delimited field.</summary>
    internal const int MaxFieldHeaderBytes = 1 + 5;

    /// <summary>
    /// Writes a length-delimited field's tag (field numbers below 16: one byte) and its <paramref name="length"/>;
    /// returns the bytes written, after which the field's <paramref name="length"/> bytes go.
    /// </summary>
    internal static int WriteFieldHeader(Span<byte> destination, byte tag, int length)
    {
        destination[0] = tag;
        return 1 + WriteVarint(destination[1..], (uint)length);
    }

    /// <summary>Protobuf's base-128 varint; returns the bytes written.</summary>
    internal static int WriteVarint(Span<byte> destination, ulong value)
    {
        int i = 0;
        while (value >= 0x80)
        {
            destination[i++] = (byte)(value | 0x80);
            value >>= 7;
        }
        destination[i++] = (byte)value;
        return i;
    }
}

/// <summary>
/// One message as the producer encodes it: a protobuf <see cref="Message"/>, or, for the common message that is only a
/// payload and perhaps a key, those two bytes fields written directly, without making a <see cref="Message"/> (its
/// headers map alone is three objects). Both give the same bytes: protobuf writes fields in number order, key (1) then
/// payload (3), and leaves out empty ones (a test compares them).
/// </summary>
internal readonly ref struct OutgoingBytes
{
    // Message's field numbers (proto/broker/v1/broker.proto), each with wire type 2 (length-delimited).
    private const byte KeyTag = (1 << 3) | 2;
    private const byte PayloadTag = (3 << 3) | 2;

    private readonly Message? _message;
    private readonly ReadOnlySpan<byte> _key;
    private readonly ReadOnlySpan<byte> _payload;

    public OutgoingBytes(Message message)
    {
        _message = message;
        Size = message.CalculateSize();
    }

    public OutgoingBytes(ReadOnlySpan<byte> key, ReadOnlySpan<byte> payload)
    {
        _key = key;
        _payload = payload;
        Size = FieldSize(key) + FieldSize(payload);
    }

    /// <summary>The encoded message's length.</summary>
    public int Size { get; }

    public void WriteTo(Span<byte> destination)
    {
        if (_message is not null)
        {
            _message.WriteTo(destination);
            return;
        }
        int position = WriteField(destination, KeyTag, _key);
        WriteField(destination[position..], PayloadTag, _payload);
    }

    private static int FieldSize(ReadOnlySpan<byte> value) => value.IsEmpty ? 0 : 1 + CodedOutputStream.ComputeLengthSize(value.Length) + value.Length;

    private static int WriteField(Span<byte> destination, byte tag, ReadOnlySpan<byte> value)
    {
        if (value.IsEmpty)
            return 0;
        int header = ProducerBatch.WriteFieldHeader(destination, tag, value.Length);
        value.CopyTo(destination[header..]);
        return header + value.Length;
    }
}
