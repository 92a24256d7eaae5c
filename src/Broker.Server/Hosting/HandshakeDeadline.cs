using System.Buffers;
using Microsoft.AspNetCore.Connections;

namespace Broker.Server.Hosting;

/// <summary>
/// Closes a connection that has not sent the whole 24-byte HTTP/2 client preface within
/// <see cref="BrokerOptions.HandshakeTimeoutMs"/>: one that sends nothing, or half a preface, would otherwise hold a
/// socket and its buffers for as long as it likes. A connection whose first 24 bytes are not the preface is closed at
/// once (Kestrel was seen to keep one that opened with zero bytes). The preface is examined, not consumed: Kestrel
/// reads it. Once the preface is in, <see cref="BrokerOptions.IdleConnectionTimeoutMs"/> applies.
/// </summary>
internal static partial class HandshakeDeadline
{
    private static ReadOnlySpan<byte> Preface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    private enum Opening { Preface, NotPreface, TimedOut }

    public static Func<ConnectionDelegate, ConnectionDelegate> Create(TimeSpan timeout, ILogger logger) => next => async connection =>
    {
        var opening = await ReadOpeningAsync(connection, timeout).ConfigureAwait(false);
        if (opening == Opening.Preface)
        {
            await next(connection).ConfigureAwait(false);
            return;
        }
        string remote = connection.RemoteEndPoint?.ToString() ?? "unknown";
        if (opening == Opening.TimedOut)
            Log.HandshakeTimedOut(logger, remote, (long)timeout.TotalMilliseconds);
        else
            Log.NotHttp2(logger, remote);
        connection.Abort(new ConnectionAbortedException("no HTTP/2 preface"));
    };

    /// <summary>Waits for the preface's length; a client that ends its side early is left to Kestrel, which closes it.</summary>
    private static async Task<Opening> ReadOpeningAsync(ConnectionContext connection, TimeSpan timeout)
    {
        var input = connection.Transport.Input;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(connection.ConnectionClosed);
        deadline.CancelAfter(timeout);
        try
        {
            while (true)
            {
                var result = await input.ReadAsync(deadline.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                if (buffer.Length >= Preface.Length)
                {
                    bool isPreface = IsPreface(buffer.Slice(0, Preface.Length));
                    input.AdvanceTo(buffer.Start);
                    return isPreface ? Opening.Preface : Opening.NotPreface;
                }
                if (result.IsCompleted || result.IsCanceled)
                {
                    input.AdvanceTo(buffer.Start);
                    return Opening.Preface;
                }
                input.AdvanceTo(buffer.Start, buffer.End);
            }
        }
        catch (OperationCanceledException)
        {
            return Opening.TimedOut;
        }
    }

    private static bool IsPreface(in ReadOnlySequence<byte> opening)
    {
        Span<byte> bytes = stackalloc byte[24];
        opening.CopyTo(bytes);
        return bytes.SequenceEqual(Preface);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 2401, Level = LogLevel.Information,
            Message = "Closed connection from {Remote}: no HTTP/2 preface within {TimeoutMs} ms")]
        public static partial void HandshakeTimedOut(ILogger logger, string remote, long timeoutMs);

        [LoggerMessage(EventId = 2402, Level = LogLevel.Information, Message = "Closed connection from {Remote}: it did not open with the HTTP/2 preface")]
        public static partial void NotHttp2(ILogger logger, string remote);
    }
}
