using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;
using Grpc.Core;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>What a raw gRPC call was answered with: the status, its message and the broker-error-code trailer.</summary>
public sealed record RawGrpcAnswer(StatusCode Status, string Message, string? ErrorCode);

/// <summary>
/// gRPC calls made of hand-built bytes over a real HTTP/2 connection (cleartext, prior knowledge), for requests no
/// gRPC client would send: frames are 1 byte compressed flag, 4 bytes big-endian length, then the message.
/// </summary>
public static class RawGrpc
{
    public static byte[] Frame(ReadOnlySpan<byte> message, byte flag = 0, uint? declaredLength = null)
    {
        var frame = new byte[5 + message.Length];
        frame[0] = flag;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), declaredLength ?? (uint)message.Length);
        message.CopyTo(frame.AsSpan(5));
        return frame;
    }

    public static byte[] Frame(IMessage message) => Frame(message.ToByteArray());

    /// <summary>Posts <paramref name="body"/> to a method (for example "/broker.v1.Publisher/Publish") and reads the answer to its end.</summary>
    public static async Task<RawGrpcAnswer> CallAsync(Uri address, string method, byte[] body)
    {
        using var http = new HttpClient(new SocketsHttpHandler()) { Timeout = Receive.Deadline };
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(address, method))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(body),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await response.Content.ReadAsByteArrayAsync();
        // A "trailers-only" answer carries the status in its headers; otherwise it is in the trailers.
        string? status = Value(response.Headers, "grpc-status") ?? Value(response.TrailingHeaders, "grpc-status");
        Assert.NotNull(status);
        string message = Uri.UnescapeDataString(Value(response.Headers, "grpc-message") ?? Value(response.TrailingHeaders, "grpc-message") ?? "");
        string? code = Value(response.Headers, "broker-error-code") ?? Value(response.TrailingHeaders, "broker-error-code");
        return new RawGrpcAnswer((StatusCode)int.Parse(status), message, code);
    }

    private static string? Value(HttpHeaders headers, string name) =>
        headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;
}
